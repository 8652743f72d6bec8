//! The dump file `viewkv dump` writes and `viewkv restore` reads.
//!
//! Layout (version 1), all integers little-endian:
//! - the magic `viewkv dump\n`, then the format version as a u32;
//! - a u32 length and a JSON [`DumpHeader`] (readable with `head -c`);
//! - records in key order, each `[key length: u32][value length: u32][key][value]`;
//! - the end: a key length of `u32::MAX`, the record count as a u64 and the CRC-32 of every
//!   record's bytes as a u32. A file cut short or altered fails the check by name.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::kv::api::unpack_records;
use crate::net::MAX_MESSAGE;

/// The first bytes of every dump file.
pub const MAGIC: &[u8; 12] = b"viewkv dump\n";
/// The format version this binary writes; it reads this one and older ones.
pub const VERSION: u32 = 1;
/// Marks the end of the records.
const END: u32 = u32::MAX;
/// The largest header a reader accepts (a header is a few hundred bytes).
const MAX_HEADER: u32 = 1 << 20;

/// A key and its value, as read from a dump.
pub type OwnedPair = (Vec<u8>, Vec<u8>);

/// What a dump describes about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpHeader {
    /// The view whose primary took the snapshot.
    pub view: u64,
    /// The snapshot holds every operation up to this index of that view's order.
    pub index: u64,
    /// Keys in the dump.
    pub keys: u64,
    /// Key and value bytes in the dump.
    pub bytes: u64,
    /// When the dump was taken, in ms since the Unix epoch.
    pub taken_ms: u64,
}

/// Why a dump file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum DumpFileError {
    /// The file system refused.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file does not start like a dump.
    #[error("{} is not a viewkv dump (it does not start with the dump magic)", path.display())]
    NotADump {
        /// The file.
        path: PathBuf,
    },
    /// A newer viewkv wrote it.
    #[error("{} is a version {version} dump; this viewkv reads up to version {VERSION}: use a newer viewkv", path.display())]
    NewerVersion {
        /// The file.
        path: PathBuf,
        /// Its version.
        version: u32,
    },
    /// The file ends before its end marker: the dump was cut short.
    #[error("{} ends after {records} records, before the dump's end: the dump was cut short; take it again", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Records read before the end of the file.
        records: u64,
    },
    /// The bytes do not add up.
    #[error("{} is damaged: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What does not add up.
        reason: String,
    },
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> DumpFileError + '_ {
    move |source| DumpFileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes a dump file record by record.
pub struct DumpWriter {
    /// The file, buffered.
    out: BufWriter<File>,
    /// Its name, for errors.
    path: PathBuf,
    /// CRC-32 of the records so far.
    crc: crc32fast::Hasher,
    /// Records so far.
    records: u64,
}

impl DumpWriter {
    /// Start a dump in `path` (created or truncated) with `header`.
    pub fn create(path: &Path, header: &DumpHeader) -> Result<DumpWriter, DumpFileError> {
        let file = File::create(path).map_err(io(path))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let json = serde_json::to_vec(header).map_err(|err| DumpFileError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("header: {err}"),
        })?;
        out.write_all(MAGIC).map_err(io(path))?;
        out.write_all(&VERSION.to_le_bytes()).map_err(io(path))?;
        out.write_all(&(json.len() as u32).to_le_bytes())
            .map_err(io(path))?;
        out.write_all(&json).map_err(io(path))?;
        Ok(DumpWriter {
            out,
            path: path.to_path_buf(),
            crc: crc32fast::Hasher::new(),
            records: 0,
        })
    }

    /// Append records packed as in a dump page (the file's own record layout); returns how
    /// many there were.
    pub fn packed(&mut self, packed: &[u8]) -> Result<u64, DumpFileError> {
        let count = unpack_records(packed)
            .map_err(|err| DumpFileError::Corrupt {
                path: self.path.clone(),
                reason: format!("a page from the server: {err}"),
            })?
            .len() as u64;
        self.crc.update(packed);
        self.out.write_all(packed).map_err(io(&self.path))?;
        self.records += count;
        Ok(count)
    }

    /// Write the end marker and make the file durable.
    pub fn finish(mut self) -> Result<u64, DumpFileError> {
        let path = self.path.clone();
        self.out.write_all(&END.to_le_bytes()).map_err(io(&path))?;
        self.out
            .write_all(&self.records.to_le_bytes())
            .map_err(io(&path))?;
        self.out
            .write_all(&self.crc.finalize().to_le_bytes())
            .map_err(io(&path))?;
        let file = self
            .out
            .into_inner()
            .map_err(|err| io(&path)(err.into_error()))?;
        file.sync_all().map_err(io(&path))?;
        Ok(self.records)
    }
}

/// Reads a dump file record by record, checking it as it goes.
pub struct DumpReader {
    /// The file, buffered.
    input: BufReader<File>,
    /// Its name, for errors.
    path: PathBuf,
    /// What it says about itself.
    header: DumpHeader,
    /// CRC-32 of the records read so far.
    crc: crc32fast::Hasher,
    /// Records read so far.
    records: u64,
    /// Whether the end marker was read and checked.
    ended: bool,
}

impl DumpReader {
    /// Open `path` and read its header.
    pub fn open(path: &Path) -> Result<DumpReader, DumpFileError> {
        let file = File::open(path).map_err(io(path))?;
        let mut reader = DumpReader {
            input: BufReader::with_capacity(1 << 20, file),
            path: path.to_path_buf(),
            header: DumpHeader {
                view: 0,
                index: 0,
                keys: 0,
                bytes: 0,
                taken_ms: 0,
            },
            crc: crc32fast::Hasher::new(),
            records: 0,
            ended: false,
        };
        let mut magic = [0; MAGIC.len()];
        if !reader.fill(&mut magic)? || &magic != MAGIC {
            return Err(DumpFileError::NotADump {
                path: path.to_path_buf(),
            });
        }
        let version = reader.u32()?;
        if version > VERSION {
            return Err(DumpFileError::NewerVersion {
                path: path.to_path_buf(),
                version,
            });
        }
        let length = reader.u32()?;
        if length > MAX_HEADER {
            return Err(reader.corrupt(format!("a header of {length} bytes")));
        }
        let mut json = vec![0; length as usize];
        reader.exact(&mut json)?;
        reader.header = serde_json::from_slice(&json)
            .map_err(|err| reader.corrupt(format!("header: {err}")))?;
        Ok(reader)
    }

    /// What the dump says about itself.
    pub fn header(&self) -> &DumpHeader {
        &self.header
    }

    /// The next record, or `None` after the last one, once the end marker checked out.
    pub fn next_record(&mut self) -> Result<Option<OwnedPair>, DumpFileError> {
        if self.ended {
            return Ok(None);
        }
        let key_len = self.u32()?;
        if key_len == END {
            let records = self.u64()?;
            let crc = self.u32()?;
            if records != self.records {
                return Err(self.corrupt(format!(
                    "its end says {records} records, but it holds {}",
                    self.records
                )));
            }
            if records != self.header.keys {
                return Err(self.corrupt(format!(
                    "its header says {} keys, but it holds {records}",
                    self.header.keys
                )));
            }
            if crc != self.crc.clone().finalize() {
                return Err(self.corrupt("the records' checksum does not match".into()));
            }
            let mut extra = [0; 1];
            if self.fill(&mut extra)? {
                return Err(self.corrupt("bytes follow the end of the dump".into()));
            }
            self.ended = true;
            return Ok(None);
        }
        let value_len = self.u32()?;
        if key_len as usize > MAX_MESSAGE || value_len as usize > MAX_MESSAGE {
            return Err(self.corrupt(format!(
                "record {} claims a {key_len}-byte key and a {value_len}-byte value",
                self.records + 1
            )));
        }
        let mut key = vec![0; key_len as usize];
        let mut value = vec![0; value_len as usize];
        self.exact(&mut key)?;
        self.exact(&mut value)?;
        self.crc.update(&key_len.to_le_bytes());
        self.crc.update(&value_len.to_le_bytes());
        self.crc.update(&key);
        self.crc.update(&value);
        self.records += 1;
        Ok(Some((key, value)))
    }

    fn corrupt(&self, reason: String) -> DumpFileError {
        DumpFileError::Corrupt {
            path: self.path.clone(),
            reason,
        }
    }

    /// Fill `buf`; `false` at a clean end of file before its first byte.
    fn fill(&mut self, buf: &mut [u8]) -> Result<bool, DumpFileError> {
        let mut read = 0;
        while read < buf.len() {
            match self.input.read(&mut buf[read..]) {
                Ok(0) if read == 0 => return Ok(false),
                Ok(0) => {
                    return Err(DumpFileError::Truncated {
                        path: self.path.clone(),
                        records: self.records,
                    })
                }
                Ok(n) => read += n,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => return Err(io(&self.path)(err)),
            }
        }
        Ok(true)
    }

    /// Fill `buf`; the end of the file is a truncation.
    fn exact(&mut self, buf: &mut [u8]) -> Result<(), DumpFileError> {
        if self.fill(buf)? || buf.is_empty() {
            Ok(())
        } else {
            Err(DumpFileError::Truncated {
                path: self.path.clone(),
                records: self.records,
            })
        }
    }

    fn u32(&mut self) -> Result<u32, DumpFileError> {
        let mut bytes = [0; 4];
        self.exact(&mut bytes)?;
        Ok(u32::from_le_bytes(bytes))
    }

    fn u64(&mut self) -> Result<u64, DumpFileError> {
        let mut bytes = [0; 8];
        self.exact(&mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::api::pack_record;

    fn header(keys: u64) -> DumpHeader {
        DumpHeader {
            view: 4,
            index: 10,
            keys,
            bytes: 0,
            taken_ms: 1,
        }
    }

    fn write(path: &Path, pairs: &[(&[u8], &[u8])]) {
        let mut writer = DumpWriter::create(path, &header(pairs.len() as u64)).unwrap();
        let mut packed = Vec::new();
        for (k, v) in pairs {
            pack_record(&mut packed, k, v);
        }
        assert_eq!(writer.packed(&packed).unwrap(), pairs.len() as u64);
        assert_eq!(writer.finish().unwrap(), pairs.len() as u64);
    }

    fn read_all(path: &Path) -> Result<Vec<OwnedPair>, DumpFileError> {
        let mut reader = DumpReader::open(path)?;
        let mut out = Vec::new();
        while let Some(pair) = reader.next_record()? {
            out.push(pair);
        }
        Ok(out)
    }

    #[test]
    fn records_round_trip_with_any_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d");
        let pairs: Vec<(&[u8], &[u8])> = vec![(b"", b""), (&[0, 255, 10], &[255; 3]), (b"k", b"")];
        write(&path, &pairs);
        let got = read_all(&path).unwrap();
        let want: Vec<_> = pairs
            .iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        assert_eq!(got, want);
        assert_eq!(DumpReader::open(&path).unwrap().header(), &header(3));
    }

    #[test]
    fn a_cut_or_altered_file_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d");
        write(&path, &[(b"alpha", b"one"), (b"beta", b"two")]);
        let bytes = std::fs::read(&path).unwrap();

        for cut in [bytes.len() - 1, bytes.len() - 20, 40] {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let err = read_all(&path).unwrap_err();
            assert!(
                matches!(err, DumpFileError::Truncated { .. }),
                "cut at {cut}: {err}"
            );
        }
        let mut flipped = bytes.clone();
        let at = bytes.len() - 20;
        flipped[at] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        let err = read_all(&path).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");

        let mut longer = bytes.clone();
        longer.push(0);
        std::fs::write(&path, &longer).unwrap();
        assert!(matches!(
            read_all(&path).unwrap_err(),
            DumpFileError::Corrupt { .. }
        ));

        std::fs::write(&path, b"hello, I am a text file").unwrap();
        assert!(matches!(
            read_all(&path).unwrap_err(),
            DumpFileError::NotADump { .. }
        ));

        let mut newer = bytes.clone();
        newer[MAGIC.len()..MAGIC.len() + 4].copy_from_slice(&(VERSION + 1).to_le_bytes());
        std::fs::write(&path, &newer).unwrap();
        assert!(matches!(
            read_all(&path).unwrap_err(),
            DumpFileError::NewerVersion { version, .. } if version == VERSION + 1
        ));
    }
}
