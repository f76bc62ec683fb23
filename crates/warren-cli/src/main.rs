//! `warrenctl`, the management CLI. Not built yet: it prints so and exits
//! with status 2 rather than pretending to work.

fn main() {
    eprintln!("warrenctl: not implemented yet");
    std::process::exit(2);
}
