//! `incident-lab`: the orchestrator's command line. Everything lives in the library.

fn main() -> std::process::ExitCode {
    incident_lab::cli::main()
}
