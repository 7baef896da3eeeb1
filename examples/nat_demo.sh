#!/usr/bin/env bash
# Watch chathack cross NATs: the network-namespace lab of tests/netlab.py, a
# rendezvous on its "internet", and peers in tmux panes on different networks.
#
#   sudo examples/nat_demo.sh          # build the lab, start everything, attach
#   sudo examples/nat_demo.sh --stop   # end the peers, remove every namespace
#   examples/nat_demo.sh --help
#
# Needs root (network namespaces, iptables), iproute2, iptables and tmux, and
# chathack installed in a venv: run it with that venv active, or set
# CHATHACK_BIN=/path/to/venv/bin (sudo usually drops the venv from PATH).
#
# The lab ("chdemo" namespaces; documentation addresses only):
#   rdv  203.0.113.10    the rendezvous, on the internet
#   pub  203.0.113.20    a host with no NAT
#   a1   192.0.2.10      behind natA, a port-keeping NAT
#   b1   198.51.100.10   behind natB, a port-keeping NAT
#   s1   198.51.100.130  behind natS, a symmetric NAT
# Each has a tmux pane, titled with its name.
#
# Then, in a1's pane (the status line at the bottom shows the path):
#   connect: b1    opens "relayed" at once, then "(punched)" within seconds
#   connect: s1    stays "relayed" (a symmetric NAT defeats hole punching)
#   connect: pub   "direct" (pub is reachable; from pub's pane it works too)
#   ::netcheck     what a1 knows: its public endpoint, its NAT, the paths
# Ctrl-b o moves between panes; Ctrl-b d detaches (run this again to re-attach).
# CHATHACK_DEMO_DETACHED=1 starts everything without attaching (for scripts).
set -euo pipefail

SESSION=chathack-nat-demo
LAB=chdemo            # the prefix `python -m tests.netlab up` uses
SERVER=203.0.113.10:7777
DIR=${CHATHACK_DEMO_DIR:-${TMPDIR:-/tmp}/chathack-nat-demo}
HOSTS=(a1 b1 s1 pub)
REPO=$(cd "$(dirname "$0")/.." && pwd)
SELF="$REPO/examples/$(basename "$0")"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  ""|--stop|--pane) ;;
  *) echo "nat_demo.sh: unknown argument ${1}; try --help" >&2; exit 2 ;;
esac

if [[ "${1:-}" == "--pane" ]]; then
  # Internal: what one tmux pane runs (--pane HOST BIN DIR). The pane stays
  # open after the program ends, so its last words can be read.
  host=$2 BIN=$3 DIR=$4
  if [[ "$host" == rdv ]]; then
    ip netns exec "$LAB-rdv" "$BIN/chathack-rendezvous" --host 0.0.0.0 --port "${SERVER##*:}" \
      --db "$DIR/rendezvous.sqlite3" --log-level info || true
  else
    CHATHACK_PASSWORD="$host-demo-password" ip netns exec "$LAB-$host" \
      "$BIN/chathack-peer" "$host" --server "$SERVER" --data-dir "$DIR/$host" || true
  fi
  read -r -p "$host exited; Enter closes this pane " _ || true
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "nat_demo.sh needs root (it creates network namespaces and iptables rules):" >&2
  echo "  sudo CHATHACK_BIN=\"\$VIRTUAL_ENV/bin\" $0 ${1:-}" >&2
  exit 1
fi
for tool in tmux ip iptables; do
  command -v "$tool" >/dev/null || {
    echo "nat_demo.sh needs $tool: apt-get install tmux iproute2 iptables" >&2; exit 1; }
done
BIN=${CHATHACK_BIN:-}
if [[ -z "$BIN" ]] && command -v chathack-peer >/dev/null; then
  BIN=$(dirname "$(command -v chathack-peer)")
fi
if [[ -z "$BIN" || ! -x "$BIN/chathack-peer" || ! -x "$BIN/chathack-rendezvous" ]]; then
  echo "chathack is not found: activate its venv or set CHATHACK_BIN=/path/to/venv/bin" >&2
  exit 1
fi
PY="$BIN/python"
[[ -x "$PY" ]] || PY=python3

lab() { (cd "$REPO" && "$PY" -m tests.netlab "$@"); }

stop() {
  # Ending the tmux session hangs up the peers; `netlab down` then kills,
  # by pid, whatever still runs inside a lab namespace and removes them all.
  if tmux kill-session -t "$SESSION" 2>/dev/null; then echo "tmux session $SESSION ended"; fi
  lab down "$LAB"
}

if [[ "${1:-}" == "--stop" ]]; then
  stop
  exit 0
fi

if ! tmux has-session -t "$SESSION" 2>/dev/null; then
  if ip netns list | grep -q "^$LAB-"; then
    echo "the $LAB lab is up but the demo is not: run $0 --stop first" >&2
    exit 1
  fi
  trap 'echo "nat_demo.sh: setup failed; tearing down" >&2; stop >/dev/null 2>&1 || true' ERR
  lab up | sed '/^$/,$d'  # the table of hosts; the rest is for people building by hand
  mkdir -p "$DIR"
  rm -f "$DIR"/rendezvous.sqlite3*  # a fresh rendezvous: demo accounts only
  pane=$(tmux new-session -d -s "$SESSION" -n lab -x 220 -y 60 -P -F '#{pane_id}' \
    "$SELF" --pane rdv "$BIN" "$DIR")
  tmux set-option -p -t "$pane" @host rdv
  tmux set-option -t "$SESSION" pane-border-status top
  tmux set-option -t "$SESSION" pane-border-format ' #{@host} '
  # Wait (at most 10 s) until the rendezvous accepts connections, from inside its namespace.
  for _ in $(seq 100); do
    ip netns exec "$LAB-rdv" bash -c "exec 3<>/dev/tcp/127.0.0.1/${SERVER##*:}" 2>/dev/null && break
    sleep 0.1
  done
  for host in "${HOSTS[@]}"; do
    pane=$(tmux split-window -t "$SESSION:lab" -P -F '#{pane_id}' \
      "$SELF" --pane "$host" "$BIN" "$DIR")
    tmux set-option -p -t "$pane" @host "$host"
    tmux select-layout -t "$SESSION:lab" tiled >/dev/null
    if [[ "$host" == a1 ]]; then first=$pane; fi
  done
  tmux select-pane -t "$first"
  trap - ERR
  echo "In a1's pane type: connect: b1   (relayed, then punched); connect: s1 stays relayed. The other side finds a1 in window 2 (Alt-2)."
  echo "$0 --stop ends it all."
fi
if [[ -t 1 && -z "${CHATHACK_DEMO_DETACHED:-}" ]]; then
  exec tmux attach -t "$SESSION"
fi
echo "demo running in tmux session $SESSION (attach: tmux attach -t $SESSION; panes by host:"
echo "  tmux list-panes -t $SESSION -F '#{pane_id} #{@host}')"
