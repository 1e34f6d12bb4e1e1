//! Job ids that never collide across instances: each instance reserves blocks of ids from one
//! database sequence and hands them out locally, so starting a job needs no round trip.

use std::ops::Range;

use super::{Db, StoreError};

/// The first id of block 0: ids have 16 digits (as the registry's own time-based ids do) for
/// the first 8.5 billion blocks.
pub const ID_BASE: u64 = 1_000_000_000_000_000;

/// Ids per block: 2^20, about a million.
pub const ID_BLOCK_SIZE: u64 = 1 << 20;

impl Db {
    /// Reserves the next block of [`ID_BLOCK_SIZE`] job ids: no other call, from this instance
    /// or any other, ever gets an id of it. Every id is below `i64::MAX`, so it fits the
    /// `BIGINT` columns.
    ///
    /// Ids of a block that an instance did not use before it stopped are never handed out
    /// again; with 2^20 ids a block, the id space lasts 8.8 trillion blocks.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the database cannot be reached, or (after 8.8 trillion blocks) the
    /// sequence is exhausted.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe in that nothing breaks; a block reserved by a call whose future was dropped
    /// is skipped.
    pub async fn reserve_id_block(&self) -> Result<Range<u64>, StoreError> {
        const WHAT: &str = "reserve a block of job ids";
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT nextval('asyncjobs_id_blocks')")
            .await
            .map_err(|e| StoreError::query(WHAT, e))?;
        let block: i64 = client
            .query_one(&statement, &[])
            .await
            .map_err(|e| StoreError::query(WHAT, e))?
            .get(0);
        Ok(block_range(block as u64))
    }
}

/// The ids of block `block`.
pub(super) fn block_range(block: u64) -> Range<u64> {
    let start = ID_BASE + block * ID_BLOCK_SIZE;
    start..start + ID_BLOCK_SIZE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_adjacent_and_the_last_fits_in_i64() {
        assert_eq!(block_range(0), ID_BASE..ID_BASE + ID_BLOCK_SIZE);
        assert_eq!(block_range(1).start, block_range(0).end);
        assert_eq!(block_range(0).start.to_string().len(), 16);
        // The sequence's MAXVALUE in schema.rs.
        let last = block_range(8_795_139_347_890);
        assert!(last.end - 1 <= i64::MAX as u64);
        assert!(block_range(8_795_139_347_891).end - 1 > i64::MAX as u64);
    }
}
