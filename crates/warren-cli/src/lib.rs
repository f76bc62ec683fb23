//! `warrenctl`, Warren's management CLI. It speaks only the management
//! HTTP API (and, for `migrate`, AMQP as a client), so it works against
//! Warren and RabbitMQ alike; it depends on no broker crate.
//!
//! [`run`] is the whole program with its streams and environment given,
//! so tests drive it in-process; `main.rs` hands it the process's own.

pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod error;
pub mod migrate;
pub mod output;

use std::ffi::OsString;
use std::io::{Read, Write};

use clap::{CommandFactory, Parser};

use crate::cli::{Cli, Command, Format};
use crate::client::Api;
use crate::commands::Ctx;
use crate::config::Env;
use crate::error::{CliError, Exit};
use crate::output::Out;

/// The program's streams.
pub struct Io<'a> {
    /// Standard output.
    pub out: &'a mut dyn Write,
    /// Standard error.
    pub err: &'a mut dyn Write,
    /// Standard input.
    pub input: &'a mut dyn Read,
    /// Whether standard output is a terminal.
    pub tty: bool,
}

/// Runs warrenctl with `args` (the program name first); returns the exit
/// code.
pub fn run<I, T>(args: I, env: &Env, io: &mut Io<'_>) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            // --help and --version are not errors.
            let code = if e.use_stderr() {
                Exit::Usage as i32
            } else {
                0
            };
            let text = e.render().to_string();
            if e.use_stderr() {
                let _ = write!(io.err, "{text}");
            } else {
                let _ = write!(io.out, "{text}");
            }
            return code;
        }
    };
    match execute(cli, env, io) {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(io.err, "warrenctl: {e}");
            e.exit as i32
        }
    }
}

fn execute(cli: Cli, env: &Env, io: &mut Io<'_>) -> Result<i32, CliError> {
    let format = cli.format.unwrap_or(Format::Table);
    if let Command::Completions { shell } = &cli.command {
        let mut cmd = Cli::command();
        clap_complete::generate(*shell, &mut cmd, "warrenctl", io.out);
        return Ok(0);
    }
    let conn = config::resolve(&cli.conn, env)?;
    let api = Api::new(conn.endpoint.clone())?;
    let mut c = Ctx {
        api: &api,
        conn: &conn,
        out: Out {
            w: io.out,
            format,
            tty: io.tty,
        },
        input: io.input,
    };
    match cli.command {
        Command::Overview => commands::overview(&mut c)?,
        Command::Status => {
            if !commands::status(&mut c)? {
                return Ok(Exit::Failure as i32);
            }
        }
        Command::List {
            kind,
            columns,
            filter,
            sort,
            reverse,
        } => commands::list(
            &mut c,
            kind,
            columns.as_deref(),
            filter.as_deref(),
            sort.as_deref(),
            reverse,
        )?,
        Command::Declare { what } => commands::declare(&mut c, what)?,
        Command::Delete { what } => commands::delete(&mut c, what)?,
        Command::Purge { what } => commands::purge(&mut c, what)?,
        Command::Publish {
            exchange,
            routing_key,
            body,
            body_file,
            properties,
            headers,
            persistent,
        } => commands::publish(
            &mut c,
            &exchange,
            &routing_key,
            body,
            body_file,
            &properties,
            &headers,
            persistent,
        )?,
        Command::Get {
            queue,
            count,
            ack,
            reject,
            base64,
        } => commands::get(&mut c, &queue, count, ack, reject, base64)?,
        Command::Close { what } => commands::close(&mut c, what)?,
        Command::Export { what } => commands::export(&mut c, what)?,
        Command::Import { what } => commands::import(&mut c, what)?,
        Command::SetPassword {
            username,
            new_password,
        } => commands::set_password(&mut c, &username, new_password)?,
        Command::SetUserLimits {
            username,
            definition,
        } => commands::set_user_limits(&mut c, &username, &definition)?,
        Command::ClearUserLimits { username, name } => {
            commands::clear_user_limits(&mut c, &username, &name)?
        }
        Command::ListUserLimits { for_user } => {
            commands::list_user_limits(&mut c, for_user.as_deref())?
        }
        Command::Migrate(args) => migrate::run(&mut c, &args)?,
        Command::HashPassword { secret } => commands::hash_password(&mut c, secret)?,
        Command::Completions { .. } => {}
    }
    Ok(0)
}
