"""The AI server over HTTP: the client the core submits and polls through, and its reachability watch."""
