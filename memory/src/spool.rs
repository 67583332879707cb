//! A directory of execution records waiting for the store: JSON lines in numbered segments.
//!
//! Appends go to the newest segment; catching up closes it and replays segments oldest first,
//! deleting each once the store has every record in it. Records are idempotent by id, so a
//! segment replayed twice (the process died between the store's commit and the delete) does no
//! harm. Appends are flushed to the operating system, not synced to the disk: a process crash
//! loses nothing, a power cut may lose the last records.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use swarm_schemas::ExecutionRecord;

/// A segment is closed once it holds this many records.
const SEGMENT_RECORDS: u64 = 20_000;
const PREFIX: &str = "spool-";
const SUFFIX: &str = ".jsonl";

pub(crate) struct Spool {
    dir: PathBuf,
    current: Option<(PathBuf, BufWriter<File>, u64)>,
    next_segment: u64,
    pending: u64,
    /// Bytes of every segment.
    bytes: u64,
}

/// What reading a segment found.
pub(crate) struct Segment {
    pub path: PathBuf,
    pub records: Vec<ExecutionRecord>,
    /// Lines that were not a record (a line cut short when a process died mid-append).
    pub unreadable: u64,
    /// The segment's size.
    pub bytes: u64,
}

impl Spool {
    /// Opens (creating) the spool directory, counting records already waiting there.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut spool = Self {
            dir: dir.to_owned(),
            current: None,
            next_segment: 0,
            pending: 0,
            bytes: 0,
        };
        for (number, path) in spool.segment_paths()? {
            spool.next_segment = spool.next_segment.max(number + 1);
            let file = File::open(&path)?;
            spool.bytes += file.metadata()?.len();
            spool.pending += BufReader::new(file).split(b'\n').count() as u64;
        }
        Ok(spool)
    }

    /// Records spooled and not yet replayed.
    pub fn pending(&self) -> u64 {
        self.pending
    }

    /// Bytes spooled and not yet replayed.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Appends records to the newest segment.
    pub fn append(&mut self, records: &[ExecutionRecord]) -> std::io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        if self
            .current
            .as_ref()
            .is_none_or(|(_, _, n)| *n >= SEGMENT_RECORDS)
        {
            self.close_current()?;
            let path = self
                .dir
                .join(format!("{PREFIX}{:016}{SUFFIX}", self.next_segment));
            self.next_segment += 1;
            let file = OpenOptions::new().create(true).append(true).open(&path)?;
            self.current = Some((path, BufWriter::new(file), 0));
        }
        let Some((_, writer, count)) = self.current.as_mut() else {
            unreachable!("a segment was just opened")
        };
        let mut line = Vec::with_capacity(1024);
        let mut bytes = 0;
        for record in records {
            line.clear();
            serde_json::to_writer(&mut line, record)?;
            line.push(b'\n');
            writer.write_all(&line)?;
            bytes += line.len() as u64;
        }
        writer.flush()?;
        *count += records.len() as u64;
        self.pending += records.len() as u64;
        self.bytes += bytes;
        Ok(())
    }

    /// Closes the newest segment and returns every segment's path, oldest first.
    pub fn take_segments(&mut self) -> std::io::Result<Vec<PathBuf>> {
        self.close_current()?;
        Ok(self
            .segment_paths()?
            .into_iter()
            .map(|(_, path)| path)
            .collect())
    }

    /// Reads one closed segment.
    pub fn read(path: &Path) -> std::io::Result<Segment> {
        let file = File::open(path)?;
        let bytes = file.metadata()?.len();
        let (records, unreadable) = decode(BufReader::new(file))?;
        Ok(Segment {
            path: path.to_owned(),
            records,
            unreadable,
            bytes,
        })
    }

    /// Deletes a replayed segment.
    pub fn remove(&mut self, segment: &Segment) -> std::io::Result<()> {
        std::fs::remove_file(&segment.path)?;
        self.pending = self
            .pending
            .saturating_sub(segment.records.len() as u64 + segment.unreadable);
        self.bytes = self.bytes.saturating_sub(segment.bytes);
        Ok(())
    }

    fn close_current(&mut self) -> std::io::Result<()> {
        if let Some((_, mut writer, _)) = self.current.take() {
            writer.flush()?;
        }
        Ok(())
    }

    fn segment_paths(&self) -> std::io::Result<Vec<(u64, PathBuf)>> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let number = path.file_name().and_then(|n| n.to_str()).and_then(|n| {
                n.strip_prefix(PREFIX)?
                    .strip_suffix(SUFFIX)?
                    .parse::<u64>()
                    .ok()
            });
            if let Some(number) = number {
                found.push((number, path));
            }
        }
        found.sort();
        Ok(found)
    }
}

/// The records in a segment's lines, and how many lines were not one: a line cut short, or
/// not even UTF-8, is counted and skipped, never an error that would stop the replay of every
/// segment after it. Lines are counted as [`Spool::open`] counts them.
pub(crate) fn decode(reader: impl BufRead) -> std::io::Result<(Vec<ExecutionRecord>, u64)> {
    let mut records = Vec::new();
    let mut unreadable = 0;
    for line in reader.split(b'\n') {
        match serde_json::from_slice(&line?) {
            Ok(record) => records.push(record),
            Err(_) => unreadable += 1,
        }
    }
    Ok((records, unreadable))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::record;
    use swarm_schemas::Signal;

    fn records(n: i64) -> Vec<ExecutionRecord> {
        (0..n)
            .map(|n| {
                record(
                    &Signal::new("a", serde_json::json!({ "n": n })),
                    "u",
                    true,
                    n,
                )
            })
            .collect()
    }

    /// Appends `bytes` as they are to the spool's first segment; returns its path.
    fn append_to_first_segment(dir: &Path, bytes: &[u8]) -> PathBuf {
        let segment = dir.join(format!("{PREFIX}{:016}{SUFFIX}", 0));
        let mut file = OpenOptions::new()
            .append(true)
            .open(&segment)
            .expect("segment");
        file.write_all(bytes).expect("write");
        segment
    }

    #[test]
    fn spooled_records_survive_reopening_and_torn_lines_are_counted() {
        let dir = tempfile::tempdir().expect("dir");
        let records = records(5);
        let mut spool = Spool::open(dir.path()).expect("open");
        spool.append(&records[..3]).expect("append");
        spool.append(&records[3..]).expect("append");
        assert_eq!(spool.pending(), 5);
        drop(spool);

        // A process died mid-append: the last line is cut short.
        let segment = append_to_first_segment(dir.path(), b"{\"id\":\"0192");

        let on_disk = std::fs::metadata(&segment).expect("segment").len();
        let mut spool = Spool::open(dir.path()).expect("reopen");
        assert_eq!(spool.pending(), 6);
        assert_eq!(
            spool.bytes(),
            on_disk,
            "the bytes of what waits are counted"
        );
        spool.append(&records[..1]).expect("append after reopening");
        let segments = spool.take_segments().expect("segments");
        assert_eq!(segments.len(), 2, "reopening starts a new segment");
        let appended = std::fs::metadata(&segments[1]).expect("segment").len();
        assert_eq!(spool.bytes(), on_disk + appended);
        let first = Spool::read(&segments[0]).expect("read");
        assert_eq!(first.records, records);
        assert_eq!(first.unreadable, 1);
        spool.remove(&first).expect("remove");
        let second = Spool::read(&segments[1]).expect("read");
        assert_eq!(second.records, records[..1]);
        spool.remove(&second).expect("remove");
        assert_eq!(spool.pending(), 0);
        assert_eq!(spool.bytes(), 0);
        assert!(spool.take_segments().expect("segments").is_empty());
    }

    #[test]
    fn a_line_that_is_not_utf8_is_counted_and_the_rest_still_replays() {
        // A torn write can end inside a multi-byte character; before, one such line made the
        // whole segment unreadable, and every segment after it waited for ever.
        let dir = tempfile::tempdir().expect("dir");
        let records = records(2);
        let mut spool = Spool::open(dir.path()).expect("open");
        spool.append(&records[..1]).expect("append");
        append_to_first_segment(dir.path(), b"{\"kind\":\"caf\xc3\n");
        spool.append(&records[1..]).expect("append");
        drop(spool);

        let mut spool = Spool::open(dir.path()).expect("reopen");
        assert_eq!(spool.pending(), 3);
        let segments = spool.take_segments().expect("segments");
        let read = Spool::read(&segments[0]).expect("a segment with a bad line still reads");
        assert_eq!(read.records, records);
        assert_eq!(read.unreadable, 1);
        spool.remove(&read).expect("remove");
        assert_eq!(spool.pending(), 0);
    }
}
