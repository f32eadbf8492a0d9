fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files =
        ["cluster.proto", "topology.proto", "control.proto"].map(|f| root.join("augur/v1").join(f));
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    tonic_build::configure().compile_protos(&files, &[root])?;
    Ok(())
}
