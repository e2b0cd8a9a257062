//! The `frontdesk` command line: `run`, `check`, `demo`, `hash-key`, `reload` and `upgrade`.

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
    /// Graceful binary upgrade: start this binary as the new gateway, taking
    /// over the listening sockets of the one running on FILE (found through
    /// its pid_file), which then drains and exits. No connection is refused.
    Upgrade {
        #[arg(short, long, default_value = "conf/frontdesk.toml")]
        config: PathBuf,
        /// Run the new gateway in the background.
        #[arg(short, long)]
        daemon: bool,
    },
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

/// Reads the pid of the gateway running on `config`.
fn running_pid(config: &std::path::Path) -> Result<i32, ExitCode> {
    let loaded = match load_and_compile(config) {
        Ok((loaded, _)) => loaded,
        Err(e) => {
            eprintln!("{e}");
            eprintln!(
                "{}: {} problem(s); nothing was changed",
                config.display(),
                e.problems.len()
            );
            return Err(ExitCode::FAILURE);
        }
    };
    let pid_file = &loaded.config.server.pid_file;
    std::fs::read_to_string(pid_file)
        .map_err(|e| e.to_string())
        .and_then(|t| t.trim().parse::<i32>().map_err(|e| e.to_string()))
        .map_err(|e| {
            eprintln!("cannot read the gateway's pid from {pid_file} (server.pid_file): {e}; is it running on this config?");
            ExitCode::FAILURE
        })
}

fn send_signal(pid: i32, signal: nix::sys::signal::Signal) -> Result<(), ExitCode> {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).map_err(|e| {
        eprintln!("cannot signal pid {pid}: {e}");
        ExitCode::FAILURE
    })
}

/// `frontdesk upgrade`: the order that never leaves the port unserved.
/// Pingora's new process (`run --upgrade`) waits up to ~5 s on the upgrade
/// socket for the listening sockets; the old one sends them when it gets
/// SIGQUIT (retrying for ~5 s too), keeps serving what it has, and drains.
/// So: find the old pid, start listening (below, in `run`), and SIGQUIT the
/// old process just after, from a helper thread.
fn signal_old_gateway_after_start(config: &std::path::Path) -> Result<(), ExitCode> {
    let old = running_pid(config)?;
    if old == std::process::id() as i32 {
        eprintln!("the pid file names this process; nothing to upgrade");
        return Err(ExitCode::FAILURE);
    }
    // Fail before starting anything if the old process is gone.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(old), None).map_err(|e| {
        eprintln!("no gateway with pid {old} (from the pid file): {e}");
        ExitCode::FAILURE
    })?;
    std::thread::spawn(move || {
        // Let this process bind the upgrade socket first; both sides retry
        // for seconds, so the exact moment does not matter.
        std::thread::sleep(std::time::Duration::from_millis(300));
        if send_signal(old, nix::sys::signal::Signal::SIGQUIT).is_ok() {
            eprintln!("upgrade: asked pid {old} to hand over its sockets");
        }
    });
    Ok(())
}

/// `frontdesk reload`: refuse a bad file here, with every problem, rather
/// than let the running gateway log it; then signal the running gateway.
fn reload(config: &std::path::Path) -> ExitCode {
    let pid = match running_pid(config) {
        Ok(p) => p,
        Err(code) => return code,
    };
    match send_signal(pid, nix::sys::signal::Signal::SIGHUP) {
        Ok(()) => {
            println!(
                "reload requested (SIGHUP to pid {pid}); its log and /status tell the outcome"
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
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
        Command::Upgrade { config, daemon } => {
            // Validate before anything is signalled: a file that does not
            // compile must not make the running gateway hand over its
            // sockets to a process that is about to exit.
            if let Err(e) = load_and_compile(&config) {
                eprintln!("{e}");
                eprintln!("upgrade refused: the running gateway keeps serving");
                return ExitCode::FAILURE;
            }
            if let Err(code) = signal_old_gateway_after_start(&config) {
                return code;
            }
            (config, true, daemon, false)
        }
    };
    // An absolute path: a daemon runs in `/`, and reloads and upgrades
    // re-read the file by this path later.
    let config = std::fs::canonicalize(&config).unwrap_or(config);
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
