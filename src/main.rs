fn main() {
    eprintln!("bladefs: the mount command is not built yet; see README.md");
    std::process::exit(2);
}
