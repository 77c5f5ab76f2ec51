"""Launch-time tools: `plan` compiles the training steps for a target TPU slice from a CPU host and checks that
they fit before a pod is paid for; `chips` holds the per-chip peak rates the plan's estimates use."""
