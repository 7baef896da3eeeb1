"""The chathack rendezvous server: accounts, presence, addresses and relay."""
