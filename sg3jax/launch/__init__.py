"""The former name of `sg3jax.planning` (which launches nothing: it compiles and estimates), kept so that
`python -m sg3jax.launch.plan` / `.plan_table` and imports of them keep working."""
