fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time: a build script compiled in another checkout may be reused by cargo.
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "cluster.proto",
        "topology.proto",
        "control.proto",
        "telemetry.proto",
    ]
    .map(|f| root.join("augur/v1").join(f));
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    tonic_build::configure().compile_protos(&files, &[root])?;
    Ok(())
}
