"""Planning a run before paying for it: `plan` compiles the training steps for a target TPU slice from a CPU host
and reports whether they fit, with their FLOPs, bytes and roofline; `plan_table` renders the README's table of
such plans; `chips` holds the per-chip peak rates the estimates use."""
