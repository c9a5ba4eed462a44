# Sourced by scripts/ab-paced and scripts/thread-cpu: the services on fixed
# ports, and the long log both run on (WORK_DIR/base-{cmd,q}, written once).
# The caller sets `set -euo pipefail` and works in WORK_DIR.

events=${EVENTS:-1000000}; duration=${DURATION:-20}
cmd_addr=127.0.0.1:50181; query_addr=127.0.0.1:50182

start_command() { # BIN_DIR DATA_DIR [PREFIX...]: sets command_pid
  local bin=$1 dir=$2; shift 2
  "$@" "$bin/command-service" --data-dir "$dir" --listen $cmd_addr >command.log 2>&1 &
  command_pid=$!
  sleep 1
}
start_query() { # BIN_DIR DATA_DIR [FLAGS...]: sets query_pid
  local bin=$1 dir=$2; shift 2
  "$bin/query-service" "$@" --data-dir "$dir" --listen $query_addr \
    --command-endpoint "http://$cmd_addr" >query.log 2>&1 &
  query_pid=$!
  sleep 4
}
start() { # BIN_DIR CMD_DIR QUERY_DIR
  start_command "$1" "$2"
  start_query "$1" "$3"
}
stop() { kill "$command_pid" "$query_pid"; wait "$command_pid" "$query_pid" || true; }

write_base_log() { # BIN_DIR: the log of $events commands, a replica following
  [ ! -d base-cmd ] || return 0
  echo "writing a log of $events commands with $1"
  start "$1" base-cmd base-q
  "$1/loadgen" commands --count "$events" --command $cmd_addr --query $query_addr \
    | { grep '^== commands' || true; }
  sleep 15 # the replica catches up
  stop
}
