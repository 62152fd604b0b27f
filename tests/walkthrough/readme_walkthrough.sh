#!/usr/bin/env bash
# Runs the README's walkthrough ("### Walkthrough: …") as written, on a
# fresh clone of this checkout's HEAD: terminal 1 starts the Stripe
# stand-in, terminal 2 runs scripts/run (which builds Release, starts the
# private cluster, creates the local-dev service token and prints it), and
# terminal 3 runs the README's commands with that token. Passes when the
# last command hands the service the key alice connected. Every wait is
# bounded; everything started is stopped. Exit 77 (skipped) when a port
# the walkthrough uses (8080, 8081, 8420) is taken on this machine.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
key=sk_test_4eC39HqLyjWDarjtT1zdp7dc

for port in 8080 8081 8420; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is in use on this machine: the walkthrough needs it; skipped"
    exit 77
  fi
done

work=$(mktemp -d /tmp/cm-walk.XXXXXX)
chmod 755 "$work" # the cluster's postgres user must reach .data/pg
clone="$work/clone"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    kill -INT -- "-$pid" 2>/dev/null || true
  done
  sleep 1
  for pid in "${pids[@]}"; do
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
  if [ -d "$clone/.data/pg" ]; then
    "$clone/scripts/pg-cluster" stop "$clone/.data/pg" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM # the EXIT trap then stops everything started

git clone -q "$src" "$clone"
cd "$clone"
# The walkthrough's section, and its commands by terminal.
awk '/^### Walkthrough:/{on=1; next} on && /^##/{exit} on' README.md >"$work/section.md"
line_of() { grep -E "# terminal $1\$" "$work/section.md" | sed -E "s/[[:space:]]*# terminal $1\$//"; }
terminal1=$(line_of 1)
terminal2=$(line_of 2)
# Terminal 3: the last code block of the section, as written.
awk '/^```/ {if (on) on = 0; else {on = 1; n++; block[n] = ""}; next}
     on {block[n] = block[n] $0 "\n"}
     END {printf "%s", block[n]}' "$work/section.md" >"$work/terminal3.sh"
[ -n "$terminal1" ] && [ -n "$terminal2" ] && [ -s "$work/terminal3.sh" ] || {
  echo "the README's walkthrough section has changed shape:"; cat "$work/section.md"; exit 1; }
echo "terminal 1: $terminal1"
echo "terminal 2: $terminal2"
echo "terminal 3:"; cat "$work/terminal3.sh"

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      echo "gave up waiting for $what"
      return 1
    fi
    sleep 1
  done
}

setsid bash -c "$terminal1" >"$work/terminal1.log" 2>&1 &
pids+=($!)
wait_for 180 "the Stripe stand-in" grep -q "Server started" "$work/terminal1.log" ||
  { cat "$work/terminal1.log"; exit 1; }

setsid bash -c "$terminal2" >"$work/terminal2.log" 2>&1 &
pids+=($!)
wait_for 1380 "scripts/run to serve" curl -sf http://127.0.0.1:8080/api/v1/health ||
  { tail -50 "$work/terminal2.log"; exit 1; }

# "run that line in terminal 3"
export_line=$(grep -E '^[[:space:]]*export SERVICE_TOKEN=' "$work/terminal2.log" | head -1)
[ -n "$export_line" ] || { echo "scripts/run printed no SERVICE_TOKEN"; tail -50 "$work/terminal2.log"; exit 1; }
eval "$export_line"

output=$(timeout 120 bash -e "$work/terminal3.sh" 2>&1) || { echo "$output"; tail -50 "$work/terminal2.log"; exit 1; }
echo "terminal 3 printed:"
echo "$output"
last=$(echo "$output" | tail -1)
case "$last" in
  *"\"access_token\":\"$key\""*) echo "the service holds the key alice connected" ;;
  *) echo "the last command did not hand over the key"; exit 1 ;;
esac
# No secret in what the service logged.
if grep -v 'export SERVICE_TOKEN=' "$work/terminal2.log" | grep -q -e "$key" -e "$SERVICE_TOKEN"; then
  echo "a secret reached the service's output"
  exit 1
fi
