//! `suroga`: the Suroga Stream binary. `serve` runs the service (under the Azure Functions host or
//! on its own); the other commands are helpers on the same code.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc, set up by [`suroga::allocator::configure`].
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "suroga", version, about = "Suroga Stream: booked one-to-one video sessions on Janus")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service: the API, the timer jobs and (by default) a local Janus host.
    Serve,
    /// Print a development token signed with the local HS256 secret.
    Token {
        /// The user id (`sub`).
        #[arg(long)]
        sub: String,
        /// Give the token the admin role.
        #[arg(long)]
        admin: bool,
        /// Lifetime, like `90s`, `30m`, `1h`, `7d`.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// Print the web client's sign-in link (`<base>/app/#token=<jwt>`) instead of the token.
        #[arg(long)]
        url: bool,
    },
    /// Print the Janus host schedule the bookings need (a dry run: nothing is switched).
    Plan {
        /// How many days ahead.
        #[arg(long, default_value_t = 7)]
        days: i64,
    },
    /// Azure Functions helpers.
    Functions {
        #[command(subcommand)]
        command: suroga::functions::FunctionsCommand,
    },
}

fn main() -> ExitCode {
    suroga::allocator::configure();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Before telemetry is up, or for CLI helpers: a plain message.
            eprintln!("suroga: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve => {
            let config = suroga::config::Config::from_env()?;
            suroga::telemetry::init(config.log_json);
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(suroga::app::serve_forever(config))
        }
        Command::Token { sub, admin, ttl, url } => {
            let config = suroga::config::Config::from_env()?;
            let ttl = suroga::auth::parse_ttl(&ttl)?;
            let token = suroga::app::dev_token(&config, &sub, admin, ttl)?;
            if url {
                println!("{}", suroga::web::sign_in_link(&config.public_base_url, &token));
            } else {
                println!("{token}");
            }
            Ok(())
        }
        Command::Plan { days } => {
            let config = suroga::config::Config::from_env()?;
            let rt = tokio::runtime::Runtime::new()?;
            print!("{}", rt.block_on(suroga::app::plan_table(&config, days))?);
            Ok(())
        }
        Command::Functions { command } => {
            println!("{}", command.run(&suroga::api::openapi())?);
            Ok(())
        }
    }
}
