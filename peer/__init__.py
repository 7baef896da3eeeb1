"""The chathack peer: log in to a rendezvous, then chat directly or through its relay."""
