"""Tool-using rollouts (``rollout.tools``): the model calls a tool mid-answer and reads its result (text or an image)
before it goes on. ``registry`` names tools, ``crop`` is the built-in zoom, ``runner`` bounds each call in worker
processes, ``environment`` hands them to TRL, ``template`` is the tool-call format, ``settings`` reads the config,
``metrics`` counts what the tools did, ``transcripts`` builds and generates multi-turn conversations outside GRPO
(the warm-start, the evaluation).

Nothing is imported here: a sandbox worker loads a tool (``crop``) without the trainer's libraries.
"""
