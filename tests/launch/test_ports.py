"""The master port rule: 29500 + the sweep job's number (concurrent sweep points on one machine do not
collide), and a free port when that default is busy on a one-node run; an explicit port is never moved."""

from __future__ import annotations

import socket

import pytest
from launch_helpers import compose_cfg

from mmr1.launch.layout import DEFAULT_MASTER_PORT, resolve_layout


def _layout(tmp_path, env=None, **kw):
    return resolve_layout(compose_cfg([], run_dir=tmp_path), env or {}, gpus=0, **kw)


@pytest.mark.parametrize("job_num", [None, 0, 3, 17])
def test_default_port_is_29500_plus_the_job_number(tmp_path, job_num):
    layout = _layout(tmp_path, job_num=job_num)
    assert DEFAULT_MASTER_PORT == 29500 and layout.master_port == 29500 + (job_num or 0)


def _busy_default_port():
    """A listening socket on 29500 + k for the first k whose port is free now: (socket, k)."""
    for k in range(100, 200):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", DEFAULT_MASTER_PORT + k))
        except OSError:
            s.close()
            continue
        s.listen(1)
        return s, k
    pytest.fail("no free port in 29600-29699 to occupy")


def test_a_busy_default_port_is_replaced_by_a_free_one(tmp_path):
    sock, k = _busy_default_port()
    with sock:
        busy = DEFAULT_MASTER_PORT + k
        assert _layout(tmp_path, job_num=k).master_port == busy  # planning alone keeps the rule
        moved = _layout(tmp_path, job_num=k, pick_free_port=True)
        assert moved.master_port != busy and moved.sources["master_port"] == "free port (default busy)"
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with probe:
            probe.bind(("127.0.0.1", moved.master_port))  # it really is free
        # An explicit port (config or MASTER_PORT) is the user's: never moved, even when busy.
        assert _layout(tmp_path, env={"MASTER_PORT": str(busy)}, job_num=k, pick_free_port=True).master_port == busy
