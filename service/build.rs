//! `sqlx::migrate!` embeds `migrations/` at compile time; without this, a migration added to
//! a warm `target/` would not be built in until some other source file changed.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
