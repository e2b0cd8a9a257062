//! The `frontdesk` command line: `run`, `check`, `demo`, `hash-key` and `reload`.

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
    /// Read an API key on stdin and print the `sha256 = "..."` line for the config.
    HashKey,
    /// Validate a config file, then tell the gateway running on it (found
    /// through its pid_file) to reload it (SIGHUP).
    Reload {
        #[arg(short, long, default_value = "conf/frontdesk.toml")]
        config: PathBuf,
    },
}

/// `frontdesk hash-key`: the key is read from stdin (not an argument, which
/// would land in shell history and `ps`), one trailing newline dropped.
fn hash_key() -> ExitCode {
    let mut key = String::new();
    if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut key) {
        eprintln!("cannot read the key from stdin: {e}");
        return ExitCode::FAILURE;
    }
    let key = key
        .strip_suffix('\n')
        .map(|k| k.strip_suffix('\r').unwrap_or(k))
        .unwrap_or(&key);
    if key.is_empty() {
        eprintln!("no key on stdin: try  printf %s \"$KEY\" | frontdesk hash-key");
        return ExitCode::FAILURE;
    }
    println!("sha256 = \"{}\"", frontdesk::auth::api_key::hash_key(key));
    ExitCode::SUCCESS
}

/// `frontdesk reload`: refuse a bad file here, with every problem, rather
/// than let the running gateway log it; then signal the running gateway.
fn reload(config: &std::path::Path) -> ExitCode {
    let loaded = match load_and_compile(config) {
        Ok((loaded, _)) => loaded,
        Err(e) => {
            eprintln!("{e}");
            eprintln!(
                "{}: not reloaded: {} problem(s)",
                config.display(),
                e.problems.len()
            );
            return ExitCode::FAILURE;
        }
    };
    let pid_file = &loaded.config.server.pid_file;
    let pid = match std::fs::read_to_string(pid_file)
        .map_err(|e| e.to_string())
        .and_then(|t| t.trim().parse::<i32>().map_err(|e| e.to_string()))
    {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cannot read the gateway's pid from {pid_file} (server.pid_file): {e}; is it running on this config?");
            return ExitCode::FAILURE;
        }
    };
    match nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    ) {
        Ok(()) => {
            println!(
                "reload requested (SIGHUP to pid {pid}); its log and /status tell the outcome"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot signal pid {pid} from {pid_file}: {e}");
            ExitCode::FAILURE
        }
    }
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
        Command::HashKey => return hash_key(),
        Command::Reload { config } => return reload(&config),
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
