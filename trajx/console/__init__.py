"""Rich renderings of the client's resources (tables, event lines, live progress), shared
by the CLI and the demo; it imports the client, never the CLI."""
