# Helpers of scripts/infra.sh and scripts/stack.sh (sourced).

# running PID: the process exists and is not a zombie. A process killed with -9 stays a
# zombie until its parent reaps it, and the parent of a background server is often
# init, which may take its time: `kill -0` alone calls that process alive.
running() {
  kill -0 "$1" 2>/dev/null || return 1
  [ "$(ps -o stat= -p "$1" 2>/dev/null | cut -c1)" != Z ]
}
