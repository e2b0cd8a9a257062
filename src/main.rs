//! The `frontdesk` command line: `run`, `check` and `demo`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use frontdesk::gateway::load_and_compile;
use frontdesk::server::{run, RunOptions};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "frontdesk",
    version,
    about = "An API gateway and edge proxy on Pingora"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        /// The config file.
        #[arg(short, long, default_value = "conf/frontdesk.toml")]
        config: PathBuf,
        /// Take over the listening sockets of a running gateway (graceful upgrade).
        #[arg(short, long)]
        upgrade: bool,
        /// Run in the background (daemonize).
        #[arg(short, long)]
        daemon: bool,
    },
    /// Validate a config file, like `nginx -t`: every problem with its key and line.
    Check {
        #[arg(short, long, default_value = "conf/frontdesk.toml")]
        config: PathBuf,
    },
    /// Start the gateway with three built-in demo services and print curl commands.
    Demo {
        #[arg(short, long, default_value = "conf/demo.toml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let (config, upgrade, daemon, demo) = match cli.command {
        Command::Check { config } => {
            return match load_and_compile(&config) {
                Ok(_) => {
                    println!("ok");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    eprintln!(
                        "{}: {} problem(s) found",
                        config.display(),
                        e.problems.len()
                    );
                    ExitCode::FAILURE
                }
            };
        }
        Command::Run {
            config,
            upgrade,
            daemon,
        } => (config, upgrade, daemon, false),
        Command::Demo { config } => (config, false, false, true),
    };
    let result = run(RunOptions {
        config: &config,
        upgrade,
        daemon,
        demo,
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
