#!/usr/bin/env bash
# Runs a command while nvidia-smi samples the GPU's SM clock, power draw, temperature and active
# clock-event (throttle) reasons every INTERVAL_MS, so a benchmark's phases can be read against
# the clocks they ran at (e.g. whether a long graph replay is held back by the power cap).
#
# Usage: scripts/gpu_power_log.sh CSV COMMAND [ARGS...]
#   CSV          where the samples go (one line per sample: time, SM MHz, W, C, reasons bitmask)
#   INTERVAL_MS  sampling period (default 20)
# The command's exit code is returned; the sampler is stopped either way.
set -uo pipefail
[ $# -ge 2 ] || { echo "usage: $0 CSV COMMAND [ARGS...]" >&2; exit 2; }
csv=$1
shift
command -v nvidia-smi > /dev/null || { echo "gpu_power_log: nvidia-smi not found" >&2; exit 2; }
# Drivers before 535 name the reasons field clocks_throttle_reasons.
fields=timestamp,clocks.sm,power.draw,temperature.gpu,clocks_event_reasons.active
nvidia-smi --query-gpu=$fields --format=csv > /dev/null 2>&1 || fields=${fields/event/throttle}
nvidia-smi --query-gpu=$fields --format=csv,nounits -lms "${INTERVAL_MS:-20}" > "$csv" 2>&1 &
sampler=$!
"$@"
rc=$?
kill "$sampler" 2> /dev/null
wait "$sampler" 2> /dev/null
exit $rc
