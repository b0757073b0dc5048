//! The one error type of this crate. Every variant names the input (a path, or a
//! name the caller gave an in-memory buffer) and what is wrong with it, so a
//! message printed by `veil measure` is enough to act on.

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, and with which input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input could not be opened or read.
    #[error("{input}: cannot read: {source}")]
    Io {
        input: String,
        #[source]
        source: std::io::Error,
    },

    /// Neither a disk image (GPT) nor a PE file.
    #[error("{input}: not a disk image or a UKI: {reason}")]
    NotAnImage { input: String, reason: String },

    /// A format this crate recognises but does not read (qcow2, dynamic VHD).
    #[error("{input}: unsupported image format: {reason}")]
    Unsupported { input: String, reason: String },

    /// A structure points past the end of the input.
    #[error("{input}: truncated: {what} needs bytes {start}..{end}, but the input has {len} bytes")]
    Truncated {
        input: String,
        what: String,
        start: u64,
        end: u64,
        len: u64,
    },

    /// No protective MBR or no GPT header where UEFI 2.10 §5.3 puts it.
    #[error("{input}: no GPT: {reason}")]
    NoGpt { input: String, reason: String },

    /// A GPT header or partition entry array whose CRC32 does not match.
    #[error("{input}: bad GPT CRC32 in the {what}: stored {stored:08x}, computed {computed:08x}")]
    BadGptCrc {
        input: String,
        what: String,
        stored: u32,
        computed: u32,
    },

    /// The GPT has no partition of the EFI System Partition type.
    #[error(
        "{input}: no EFI System Partition (type C12A7328-F81F-11D2-BA4B-00A0C93EC93B) in the GPT"
    )]
    NoEsp { input: String },

    /// The ESP does not hold a FAT file system this crate can read.
    #[error("{input}: the ESP's FAT file system cannot be read: {reason}")]
    BadFat { input: String, reason: String },

    /// The ESP has no `EFI/BOOT/BOOTX64.EFI`.
    #[error("{input}: no UKI on the ESP: {path} not found")]
    NoUkiOnEsp { input: String, path: String },

    /// The PE headers or section table are damaged.
    #[error("{input}: bad PE image: {reason}")]
    BadPe { input: String, reason: String },

    /// A PE file without a `.linux` section is not a UKI.
    #[error("{input}: the PE image has no .linux section, so it is not a UKI")]
    NotUki { input: String },

    /// A TPM event log that cannot be parsed.
    #[error("{input}: damaged event log at offset {offset}: {reason}")]
    BadEventLog {
        input: String,
        offset: u64,
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(input: &str, source: std::io::Error) -> Self {
        Error::Io {
            input: input.to_owned(),
            source,
        }
    }

    pub(crate) fn bad_pe(input: &str, reason: impl Into<String>) -> Self {
        Error::BadPe {
            input: input.to_owned(),
            reason: reason.into(),
        }
    }

    pub(crate) fn truncated(
        input: &str,
        what: impl Into<String>,
        start: u64,
        end: u64,
        len: u64,
    ) -> Self {
        Error::Truncated {
            input: input.to_owned(),
            what: what.into(),
            start,
            end,
            len,
        }
    }

    pub(crate) fn bad_log(input: &str, offset: u64, reason: impl Into<String>) -> Self {
        Error::BadEventLog {
            input: input.to_owned(),
            offset,
            reason: reason.into(),
        }
    }
}
