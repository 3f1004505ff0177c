"""What the live commands do with the stream the runner hands them: `trace` prints events
(`EventStream`), `watch` detects leaks and sends alerts to its sinks (`Detection`)."""
