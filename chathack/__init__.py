"""chathack: a terminal chat that reaches across networks.

This package is the shared, sans-IO core used by both the rendezvous server
(:mod:`rendezvous`) and the peer (:mod:`peer`): the rendezvous line grammar
(:mod:`chathack.protocol`) and the peer-to-peer link (:mod:`chathack.link`).
Nothing here imports trio or socket.
"""

__version__ = "0.1.0"
