//! The `warren` broker binary (not built yet).
fn main() {}
