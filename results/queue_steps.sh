# Sourced by the results/run_*_queue.sh scripts: log and step over the marker directory $M (set before sourcing).
# step NAME COMMAND... runs COMMAND once (a marker $M/NAME.done), logging its start, end and status to
# $M/progress.log and its output to $M/NAME.log, so re-running a queue resumes where it stopped.
mkdir -p "$M"
log() { echo "$(date -u +%H:%M:%S) $*" | tee -a "$M/progress.log"; }
step() {
  local name=$1; shift
  [ -f "$M/$name.done" ] && { log "skip $name (done)"; return 0; }
  log "start $name: $*"
  if "$@" > "$M/$name.log" 2>&1; then touch "$M/$name.done"; log "done $name"; else log "FAILED $name (see $M/$name.log)"; fi
}
