//! The `warrenctl` binary: [`warren_cli::run`] with the process's own
//! streams, arguments and environment.

use std::io::IsTerminal;

fn main() {
    let env = warren_cli::config::Env::from_process();
    let stdout = std::io::stdout();
    let tty = stdout.is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut out = stdout.lock();
    let mut err = std::io::stderr().lock();
    let mut input = std::io::stdin().lock();
    let code = warren_cli::run(
        std::env::args_os(),
        &env,
        &mut warren_cli::Io {
            out: &mut out,
            err: &mut err,
            input: &mut input,
            tty,
        },
    );
    std::process::exit(code);
}
