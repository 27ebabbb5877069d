//! [`CodegenError`].

use std::path::PathBuf;

/// Why types could not be generated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodegenError {
    /// The schema folder could not be loaded (a file is not valid JSON or not a valid schema, or a reference
    /// is missing).
    #[error("loading the schemas: {0}")]
    Schema(#[from] deimos_avro::SchemaError),
    /// A schema uses something the generator cannot express as a Rust type.
    #[error("{schema}: {message}")]
    Unsupported {
        /// The named type (or field) at fault.
        schema: String,
        /// What is not supported and what to do.
        message: String,
    },
    /// Writing the generated file failed.
    #[error("writing {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A `build.rs` helper ran outside cargo (no `OUT_DIR`).
    #[error("OUT_DIR is not set: call deimos_codegen::build_script from a build.rs run by cargo")]
    NoOutDir,
}
