"""The application: settings from the environment, the wiring of adapters into the core,
the command line, and the HTTP port (health, metrics, status and the dashboard)."""
