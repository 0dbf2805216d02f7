//! `slurm`: not yet implemented; its issue in the tracker describes what it will do.

fn main() -> std::process::ExitCode {
    eprintln!("slurm: not yet implemented (see ARCHITECTURE.md for the planned pipeline)");
    std::process::ExitCode::FAILURE
}
