"""Training a persona: the base (hub id, folder or GGUF file), the fine-tuning loop with its data and
guard rails, checkpoints, devices, progress, and the queues that run one training (in this process or
on workers)."""
