# The load rig's command-line options, shared by benches/*-load.sh:
# sourced, then `rig_options "$@"` sets REPS, SCENARIOS and DURATION (the
# variables ../shared/bench/lib.sh reads). Unknown options exit 2.
rig_options() {
    while [[ $# -gt 0 ]]; do
        case $1 in
            --reps) REPS=${2:?--reps needs a number}; shift 2 ;;
            --scenarios) SCENARIOS=${2:?--scenarios needs a list}; shift 2 ;;
            --duration) DURATION=${2:?--duration needs seconds}; shift 2 ;;
            *) echo "unknown option $1" >&2; exit 2 ;;
        esac
    done
}
