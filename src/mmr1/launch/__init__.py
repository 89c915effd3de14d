"""Plan and scale out: the dry run, the launch layout (which processes, which GPUs, which ports), the re-launch
through ``accelerate launch``, the vLLM rollout server's lifetime, the DeepSpeed JSON and the memory estimate.

Only engines that exist do the distributed work (accelerate/torchrun, TRL's vLLM integration,
DeepSpeed, Hydra's submitit launcher); this package decides the layout, checks it and supervises.
"""

from mmr1.launch.deepspeed import deepspeed_config, write_deepspeed_config
from mmr1.launch.layout import Layout, LayoutError, in_launched_rank, resolve_layout
from mmr1.launch.plan import accelerate_command, build_plan
from mmr1.launch.run import LaunchError, launch, write_launch_plan
from mmr1.launch.vllm_server import server_command

__all__ = [
    "Layout", "LayoutError", "LaunchError", "accelerate_command", "build_plan", "deepspeed_config",
    "in_launched_rank", "launch", "resolve_layout", "server_command",
    "write_deepspeed_config", "write_launch_plan",
]
