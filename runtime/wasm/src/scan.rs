//! What a plugin may cost before it runs: a scan of its bytes before compiling.
//!
//! Compiling is the one thing the host does with a plugin that no store
//! limit or epoch deadline covers: cranelift's time and memory grow with the
//! size of a function body (a 1.8 MB function of 200,000 `memory.fill`s took
//! 57 s and 3.2 GB). So before handing the bytes to wasmtime, [`scan`] walks
//! them with `wasmparser` (no validation, just the structure, in one pass,
//! nested modules and components included) and refuses a component over any
//! of the caps in [`crate::limits`]; wasmtime still validates everything else.

use wasmparser::{Instance, Parser, Payload};

use engine_core::policy::LoadBounds;

use crate::limits;

/// The caps a scan checks: the fixed ones of [`crate::limits`] and the
/// plugin's own [`LoadBounds`] (its `[plugin.NAME]` table may raise those).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub file_bytes: u64,
    pub function_body_bytes: u64,
    pub functions: u64,
}

impl Caps {
    /// The caps of a plugin with these bounds.
    pub fn of(bounds: &LoadBounds) -> Caps {
        Caps {
            file_bytes: bounds.max_file_mb.saturating_mul(1 << 20),
            function_body_bytes: bounds.max_function_kb.saturating_mul(1 << 10),
            functions: bounds.max_functions,
        }
    }
}

impl Default for Caps {
    fn default() -> Caps {
        Caps::of(&LoadBounds::DEFAULT)
    }
}

/// What a component holds, summed over all its (nested) modules and components.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Size of the file.
    pub bytes: u64,
    /// Core modules.
    pub modules: u64,
    /// Nested components (not counting the component itself).
    pub components: u64,
    /// `instantiate` of a core module, in all core instance sections.
    pub core_instantiations: u64,
    /// Function bodies.
    pub functions: u64,
    /// The largest function body, in bytes.
    pub max_function_body_bytes: u64,
    /// The locals declared by the function with the most locals.
    pub max_function_locals: u64,
    /// Memories defined (not imported) by the modules.
    pub memories: u64,
    /// Tables defined (not imported) by the modules.
    pub tables: u64,
}

/// The first limit a component exceeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exceeded {
    pub what: crate::LoadLimit,
    pub actual: u64,
    pub limit: u64,
}

/// Why a component was not accepted by the scan.
#[derive(Debug)]
pub enum ScanError {
    /// Over one of the caps.
    Exceeded(Exceeded),
    /// Not even well-formed enough to walk.
    Malformed(String),
}

impl Stats {
    /// The first cap these stats break, if any.
    pub fn exceeded(&self, caps: &Caps) -> Option<Exceeded> {
        use crate::LoadLimit as L;
        let checks = [
            (L::FileBytes, self.bytes, caps.file_bytes as usize),
            (
                L::FunctionBodyBytes,
                self.max_function_body_bytes,
                caps.function_body_bytes as usize,
            ),
            (
                L::FunctionLocals,
                self.max_function_locals,
                limits::MAX_FUNCTION_LOCALS,
            ),
            (L::Functions, self.functions, caps.functions as usize),
            (L::Modules, self.modules, limits::MAX_MODULES),
            (
                L::Components,
                self.components,
                limits::MAX_NESTED_COMPONENTS,
            ),
            (
                L::Instances,
                self.core_instantiations,
                limits::MAX_INSTANCES,
            ),
            (L::Memories, self.memories, limits::MAX_MEMORIES),
            (L::Tables, self.tables, limits::MAX_TABLES),
        ];
        checks
            .into_iter()
            .find(|(_, actual, limit)| actual > &(*limit as u64))
            .map(|(what, actual, limit)| Exceeded {
                what,
                actual,
                limit: limit as u64,
            })
    }
}

/// Walk a component's structure and check it against the caps.
///
/// Stops at the first cap broken, so a hostile file costs at most one pass
/// over `caps.file_bytes`.
pub fn scan(bytes: &[u8], caps: &Caps) -> Result<Stats, ScanError> {
    let mut s = Stats {
        bytes: bytes.len() as u64,
        ..Stats::default()
    };
    if let Some(e) = s.exceeded(caps) {
        return Err(ScanError::Exceeded(e));
    }
    let malformed = |e: wasmparser::BinaryReaderError| ScanError::Malformed(e.to_string());
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(malformed)? {
            Payload::ModuleSection { .. } => s.modules += 1,
            Payload::ComponentSection { .. } => s.components += 1,
            Payload::InstanceSection(reader) => {
                for instance in reader {
                    if let Instance::Instantiate { .. } = instance.map_err(malformed)? {
                        s.core_instantiations += 1;
                    }
                }
            }
            Payload::MemorySection(reader) => s.memories += u64::from(reader.count()),
            Payload::TableSection(reader) => s.tables += u64::from(reader.count()),
            Payload::CodeSectionStart { count, .. } => s.functions += u64::from(count),
            Payload::CodeSectionEntry(body) => {
                let len = body.range().len() as u64;
                s.max_function_body_bytes = s.max_function_body_bytes.max(len);
                let mut locals = 0u64;
                for local in body.get_locals_reader().map_err(malformed)? {
                    let (count, _) = local.map_err(malformed)?;
                    locals = locals.saturating_add(u64::from(count));
                }
                s.max_function_locals = s.max_function_locals.max(locals);
            }
            _ => {}
        }
        if let Some(e) = s.exceeded(caps) {
            return Err(ScanError::Exceeded(e));
        }
    }
    Ok(s)
}
