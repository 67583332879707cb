//! `swarm-unit-worker`: runs one isolated unit's library for a reactor, which starts it.
//! Not meant to be run by hand.

fn main() -> std::process::ExitCode {
    swarm_reactor::isolate::worker_main()
}
