//! `inspection.protobuf_descriptor_sets`: `FileDescriptorSet` files (as `protoc
//! --descriptor_set_out` or `buf build` write them) loaded into one `prost-reflect`
//! [`DescriptorPool`] when the configuration loads, and the message type a body is read as:
//! the input type of the method a gRPC path (`/package.Service/Method`) names, or the type a
//! media type names. A type the pool does not know is read without a schema.

use std::path::{Path, PathBuf};

use prost_reflect::{DescriptorPool, MessageDescriptor};

/// A descriptor file larger than this is refused (a descriptor set of a large API is a few
/// hundred KiB).
pub const MAX_DESCRIPTOR_SET_BYTES: u64 = 64 << 20;

/// The message types of the configured descriptor sets. Cloning is cheap (the pool is shared).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtobufSchemas {
    pool: DescriptorPool,
    files: Vec<PathBuf>,
}

/// Why a descriptor set file could not be loaded (the text names the file, never contents).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct SchemaError {
    /// Index of the file in the list.
    pub index: usize,
    /// The file.
    pub path: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ProtobufSchemas {
    /// Loads every file into one pool (a later file may use the types of an earlier one).
    ///
    /// # Errors
    /// The first file that is missing, unreadable, too large, not a `FileDescriptorSet`, or
    /// whose types clash with or miss those already loaded.
    pub fn load(paths: &[PathBuf]) -> Result<Self, SchemaError> {
        let mut pool = DescriptorPool::new();
        for (index, p) in paths.iter().enumerate() {
            let err = |reason: String| SchemaError {
                index,
                path: p.display().to_string(),
                reason,
            };
            let bytes = read_bounded(p).map_err(err)?;
            pool.decode_file_descriptor_set(bytes.as_slice())
                .map_err(|e| err(format!("not a readable FileDescriptorSet: {e}")))?;
        }
        Ok(ProtobufSchemas {
            pool,
            files: paths.to_vec(),
        })
    }

    /// The files loaded.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// A message type by its full name (`partner.v1.Customer`).
    pub(crate) fn message(&self, name: &str) -> Option<MessageDescriptor> {
        self.pool
            .get_message_by_name(name.strip_prefix('.').unwrap_or(name))
    }

    /// The input type of the method a gRPC path names (`/partner.v1.CustomerService/Upload`).
    pub(crate) fn method_input(&self, path: &str) -> Option<MessageDescriptor> {
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        let s = self.pool.get_service_by_name(service)?;
        let m = s.methods().find(|m| m.name() == method)?;
        Some(m.input())
    }
}

fn read_bounded(p: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let f = std::fs::File::open(p).map_err(|e| format!("cannot read: {e}"))?;
    let mut bytes = Vec::new();
    f.take(MAX_DESCRIPTOR_SET_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_DESCRIPTOR_SET_BYTES {
        return Err(format!(
            "larger than {MAX_DESCRIPTOR_SET_BYTES} bytes: not a descriptor set"
        ));
    }
    Ok(bytes)
}
