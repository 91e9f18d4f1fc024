//! The local file system as DataFusion's writer sees it, with large files
//! written around the page cache.
//!
//! Input: the uploads DataFusion's Parquet writer makes to local paths (the
//! contacts table, written by [`crate::report::ContactsWriter`]). Output:
//! the files. A file uploaded in parts (DataFusion's writer does so once a
//! file outgrows its 10 MiB buffer) is written through a `DirectWriter`
//! (`O_DIRECT` where the file system allows it, see
//! `crate::buckets::direct`); everything else, reads included, is
//! [`LocalFileSystem`]'s.
//!
//! Through the page cache the kernel copied every byte of the contacts
//! table into cache pages: 3% of a 100M-contact run's cycles, with both
//! cores busy. Written directly, the run's system time fell by 3.5–5.9 s in
//! four A/B pairs at 100M (BENCHMARKS.md, "Sixteenth session").

use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, UploadPart,
};

use crate::buckets::direct::DirectWriter;

/// The buffer an upload is written through.
const UPLOAD_BUFFER: usize = 4 << 20;

/// [`LocalFileSystem`], but multipart uploads written directly.
#[derive(Debug, Default)]
pub struct DirectStore {
    local: LocalFileSystem,
}

impl DirectStore {
    /// A store over the whole local file system (as DataFusion's default).
    pub fn new() -> DirectStore {
        DirectStore::default()
    }

    /// Registers a [`DirectStore`] as `ctx`'s store for local files.
    pub fn register(ctx: &datafusion::prelude::SessionContext) {
        let url = datafusion::execution::object_store::ObjectStoreUrl::local_filesystem();
        ctx.register_object_store(url.as_ref(), Arc::new(DirectStore::new()));
    }
}

impl fmt::Display for DirectStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DirectStore({})", self.local)
    }
}

/// An error of this store, with its cause.
fn store_error(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> object_store::Error {
    object_store::Error::Generic {
        store: "DirectStore",
        source: source.into(),
    }
}

/// An I/O error at `path`, named.
fn io_error(path: &std::path::Path, e: std::io::Error) -> object_store::Error {
    store_error(format!("{}: {e}", path.display()))
}

#[async_trait]
impl ObjectStore for DirectStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.local.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        if !opts.attributes.is_empty() {
            // (which the local store refuses, saying why)
            return self.local.put_multipart_opts(location, opts).await;
        }
        let dest = self.local.path_to_filesystem(location)?;
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        }
        let mut staged = dest.clone().into_os_string();
        staged.push(".direct-partial");
        let staged = PathBuf::from(staged);
        let writer =
            DirectWriter::create(&staged, UPLOAD_BUFFER).map_err(|e| io_error(&staged, e))?;
        Ok(Box::new(DirectUpload {
            writer: Some(writer),
            staged,
            dest,
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.local.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[std::ops::Range<u64>],
    ) -> object_store::Result<Vec<bytes::Bytes>> {
        self.local.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.local.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.local.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.local.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.local.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.local.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.local.rename_opts(from, to, options).await
    }
}

/// A file being uploaded: written to `staged`, renamed to `dest` when
/// complete, removed if not.
struct DirectUpload {
    /// `None` once completed or aborted.
    writer: Option<DirectWriter>,
    staged: PathBuf,
    dest: PathBuf,
}

impl fmt::Debug for DirectUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectUpload")
            .field("staged", &self.staged)
            .field("dest", &self.dest)
            .field("open", &self.writer.is_some())
            .finish()
    }
}

#[async_trait]
impl MultipartUpload for DirectUpload {
    /// Writes the part at once, in the order of the calls: the writer
    /// copies it into its buffer and waits only for the block before to
    /// reach the device (a few milliseconds).
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let written = match self.writer.as_mut() {
            None => Err(store_error(format!(
                "{}: a part after the upload ended",
                self.dest.display()
            ))),
            Some(w) => data
                .iter()
                .try_for_each(|chunk| w.write_all(chunk))
                .map_err(|e| io_error(&self.staged, e)),
        };
        Box::pin(futures::future::ready(written))
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let writer = self.writer.take().ok_or_else(|| {
            store_error(format!("{}: the upload already ended", self.dest.display()))
        })?;
        let (staged, dest) = (self.staged.clone(), self.dest.clone());
        tokio::task::spawn_blocking(move || {
            let done = writer
                .finish()
                .map_err(|e| io_error(&staged, e))
                .and_then(|_| std::fs::rename(&staged, &dest).map_err(|e| io_error(&dest, e)));
            if done.is_err() {
                // (the upload has ended: nothing else will remove it)
                let _ = std::fs::remove_file(&staged);
            }
            done
        })
        .await
        .map_err(store_error)??;
        Ok(PutResult {
            e_tag: None,
            version: None,
        })
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        if self.writer.take().is_some() {
            std::fs::remove_file(&self.staged).map_err(|e| io_error(&self.staged, e))?;
        }
        Ok(())
    }
}

impl Drop for DirectUpload {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            // neither completed nor aborted: nothing else will remove it
            let _ = std::fs::remove_file(&self.staged);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// A part length that is not a whole number of blocks.
    const ALIGN_PLUS: usize = 3 * 4096 + 5;

    fn location(p: &std::path::Path) -> Path {
        Path::from_absolute_path(p).unwrap()
    }

    /// Parts of many sizes (empty, one byte, a block less one, more than
    /// the writer's buffer), of random bytes.
    fn parts(rng: &mut StdRng) -> Vec<Vec<u8>> {
        [
            0,
            1,
            4095,
            UPLOAD_BUFFER + 3,
            10_000,
            4096,
            2 * UPLOAD_BUFFER,
            7,
        ]
        .iter()
        .map(|n| (0..*n).map(|_| rng.random()).collect())
        .collect()
    }

    #[tokio::test]
    async fn uploads_write_their_parts_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("sub").join("file.parquet");
        let store = DirectStore::new();
        let mut rng = StdRng::seed_from_u64(3);
        let parts = parts(&mut rng);
        let mut upload = store.put_multipart(&location(&dest)).await.unwrap();
        // the parts' futures awaited last first: the order is the calls'
        let pending: Vec<UploadPart> = parts
            .iter()
            .map(|p| upload.put_part(PutPayload::from(p.clone())))
            .collect();
        for p in pending.into_iter().rev() {
            p.await.unwrap();
        }
        assert!(!dest.exists(), "no file at its place before complete");
        upload.complete().await.unwrap();
        let want = parts.concat();
        assert!(std::fs::read(&dest).unwrap() == want, "the file differs");
        // read through the store, and nothing staged left beside it
        let got = store.get(&location(&dest)).await.unwrap().bytes().await;
        assert!(
            got.unwrap().as_ref() == want.as_slice(),
            "the store reads it back"
        );
        let names: Vec<_> = std::fs::read_dir(dest.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["file.parquet"]);
        // the upload has ended
        assert!(upload.put_part(PutPayload::from(vec![1u8])).await.is_err());
        assert!(upload.complete().await.is_err());
    }

    #[tokio::test]
    async fn uploads_not_completed_leave_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirectStore::new();
        for abort in [true, false] {
            let dest = dir.path().join(format!("file-{abort}"));
            let mut upload = store.put_multipart(&location(&dest)).await.unwrap();
            upload
                .put_part(PutPayload::from(vec![7u8; UPLOAD_BUFFER + 1]))
                .await
                .unwrap();
            if abort {
                upload.abort().await.unwrap();
            } else {
                drop(upload);
            }
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        }
    }

    #[tokio::test]
    async fn an_upload_that_fails_to_complete_leaves_no_staged_file() {
        // the file's place is taken by a folder that is not empty: the
        // rename at completion fails
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("taken");
        std::fs::create_dir(&dest).unwrap();
        std::fs::write(dest.join("inside"), b"x").unwrap();
        let store = DirectStore::new();
        let mut upload = store.put_multipart(&location(&dest)).await.unwrap();
        upload
            .put_part(PutPayload::from(vec![3u8; ALIGN_PLUS]))
            .await
            .unwrap();
        assert!(upload.complete().await.is_err());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["taken"]);
    }

    #[tokio::test]
    async fn datafusion_writes_a_large_parquet_file_through_it() {
        use datafusion::arrow::array::{Int64Array, RecordBatch};
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        use datafusion::dataframe::DataFrameWriteOptions;
        use datafusion::prelude::{ParquetReadOptions, SessionContext};
        // random numbers, 16 MB or so: more than DataFusion's writer buffers
        // (10 MiB) before it uploads in parts
        let mut rng = StdRng::seed_from_u64(5);
        let values: Vec<i64> = (0..2_000_000).map(|_| rng.random()).collect();
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from(values.clone()))],
        )
        .unwrap();
        let ctx = SessionContext::new();
        DirectStore::register(&ctx);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.parquet");
        let path = path.to_str().unwrap();
        ctx.read_batch(batch)
            .unwrap()
            .write_parquet(
                path,
                DataFrameWriteOptions::new().with_single_file_output(true),
                None,
            )
            .await
            .unwrap();
        assert!(std::fs::metadata(path).unwrap().len() > 12 << 20);
        let read = SessionContext::new()
            .read_parquet(path, ParquetReadOptions::default())
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let got: Vec<i64> = read
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect();
        // (in any order: the scan's partitions need not keep the rows')
        let (mut got, mut want) = (got, values);
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got.len(), want.len());
        assert!(got == want, "the values read back differ");
    }
}
