use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The pssession-operator binary.
#[derive(Parser)]
#[command(name = "pssession-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions (YAML) the operator serves.
    Crds,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Crds => match pssession_operator::crds::to_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("error: cannot render the CRDs: {error}");
                ExitCode::FAILURE
            }
        },
    }
}
