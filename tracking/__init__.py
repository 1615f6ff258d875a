"""The drivers' tracking layer: MLflow runs, metrics, tables, inputs and tracking-URI checks (never imported by
the library, aminet/)."""
