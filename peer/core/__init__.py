"""The peer's sans-IO core: every decision, no sockets, tasks or clocks."""
