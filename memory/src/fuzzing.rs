//! The spool's decoder, public for the fuzz targets (`tests/fuzz`): the function replay calls,
//! on any bytes.

use swarm_schemas::ExecutionRecord;

/// A spool segment's bytes decoded as replay decodes them: the records, the lines that were
/// not one, and the lines as the spool counts them when it opens.
pub fn spool_segment(bytes: &[u8]) -> std::io::Result<(Vec<ExecutionRecord>, u64, u64)> {
    let (records, unreadable) = crate::spool::decode(bytes)?;
    let counted = std::io::BufRead::split(bytes, b'\n').count() as u64;
    Ok((records, unreadable, counted))
}
