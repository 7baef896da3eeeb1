#!/usr/bin/env bash
# A rendezvous and two peers (alice, bob) in tmux panes on this machine.
#
#   examples/lan_demo.sh            # start, attach; Ctrl-b d detaches, rerun to re-attach
#   examples/lan_demo.sh --stop     # end the demo
#
# Each peer opens in the windowed UI: in alice's pane type `connect: bob`;
# bob's bar shows "2:alice" lit up: Alt-2 (or `::w 2`) goes there. Alt-1 is home.
#
# Across two machines of a LAN: run `chathack-rendezvous` on machine A, then on
# each machine `chathack-peer NAME --server A_ADDRESS:7777`. Peers dial each
# other directly at the address the rendezvous saw; if a firewall blocks it,
# the conversation goes through the rendezvous relay and says "relayed".
set -euo pipefail

SESSION=chathack-demo
PORT=${CHATHACK_DEMO_PORT:-7777}
DIR=${CHATHACK_DEMO_DIR:-${TMPDIR:-/tmp}/chathack-demo}
# A tmux server of its own when CHATHACK_DEMO_TMUX names one (the test does).
tmux() { command tmux ${CHATHACK_DEMO_TMUX:+-L "$CHATHACK_DEMO_TMUX"} "$@"; }

if [[ "${1:-}" == "--stop" ]]; then
  tmux kill-session -t "$SESSION" 2>/dev/null && echo "demo stopped" || echo "no demo running"
  exit 0
fi
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  sed -n '2,13p' "$0"; exit 0
fi
command -v tmux >/dev/null || { echo "lan_demo.sh needs tmux: apt-get install tmux" >&2; exit 1; }
command -v chathack-peer >/dev/null || {
  echo "chathack is not on PATH: activate the venv you installed it in (see README)" >&2; exit 1; }

mkdir -p "$DIR"
if ! tmux has-session -t "$SESSION" 2>/dev/null; then
  tmux new-session -d -s "$SESSION" -x 200 -y 50 \
    "chathack-rendezvous --host 127.0.0.1 --port $PORT --db '$DIR/rendezvous.sqlite3'"
  # Wait (at most 10 s) until the rendezvous accepts connections.
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.1
  done
  tmux split-window -h -t "$SESSION" \
    "CHATHACK_PASSWORD=alice-demo chathack-peer alice --server 127.0.0.1:$PORT --data-dir '$DIR/alice'; read -r -p 'alice exited; Enter closes'"
  tmux split-window -v -t "$SESSION" \
    "CHATHACK_PASSWORD=bob-demo chathack-peer bob --server 127.0.0.1:$PORT --data-dir '$DIR/bob'; read -r -p 'bob exited; Enter closes'"
  tmux select-layout -t "$SESSION" tiled
  echo "In alice's pane type: connect: bob   in bob's: Alt-2 (alice's window), then chat. ::help lists commands, ::quit leaves."
fi
if [[ -t 1 && -z "${CHATHACK_DEMO_DETACHED:-}" ]]; then
  exec tmux attach -t "$SESSION"
fi
echo "demo running in tmux session $SESSION (tmux ${CHATHACK_DEMO_TMUX:+-L $CHATHACK_DEMO_TMUX }attach -t $SESSION)"
