//! Fuzz target `control`: see `lapwing_fuzz::control`. Built by `cargo afl build`
//! it is an AFL++ harness; built normally it replays the files or
//! directories named on its command line.

#[cfg(fuzzing)]
fn main() {
    afl::fuzz!(|data: &[u8]| lapwing_fuzz::control::run(data));
}

#[cfg(not(fuzzing))]
fn main() -> std::process::ExitCode {
    lapwing_fuzz::replay::main(lapwing_fuzz::control::run)
}
