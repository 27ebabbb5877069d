//! Generates the types of `codegen-schemas/` into `$OUT_DIR/edge.rs` with deimos-codegen's build-script entry
//! point, as a user's `build.rs` would (`tests/codegen_build.rs` uses them).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    deimos_codegen::build_script("codegen-schemas", "edge.rs", "::deimos::avro")?;
    Ok(())
}
