//! Bucket and spill files written and read around the page cache
//! (`O_DIRECT`).
//!
//! Input: the bytes of a bucket or spill file, as Arrow's IPC writer
//! produces them. Output: the file, and its bytes read back whole into one
//! buffer of this process's memory.
//!
//! A large log writes several gigabytes of such files and reads each back
//! once, soon after. Through the page cache those writes are throttled by
//! the kernel's writeback once the dirty pages pass its limit, and the run
//! waits; around it they go to the device at its own speed
//! (BENCHMARKS.md, "Custom I/O", has the A/B that keeps this module).
//! Direct I/O needs the buffer, the file offset and the length of each read
//! and write aligned to the device's block; [`ALIGN`] (4 KiB) suits every
//! common device. Where a file system refuses `O_DIRECT` (tmpfs, say), at
//! open or at a read or write, the files are written and read the ordinary
//! way.
//!
//! Every file's full blocks go to one writer thread, which writes them in
//! turn (the device is the bound); a file has at most one block there while
//! it fills the next.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::{Arc, OnceLock, mpsc};

/// Alignment of buffers, offsets and lengths for direct I/O.
pub const ALIGN: usize = 4096;

/// Most bytes one read asks for.
const READ_CHUNK: usize = 32 << 20;

/// A zeroed, [`ALIGN`]-aligned buffer of `cap` bytes, of which the first
/// `len` are in use: the aligned part of a slightly larger vector (whose
/// heap block does not move with it).
pub struct AlignedBuf {
    mem: Vec<u8>,
    start: usize,
    cap: usize,
    len: usize,
}

impl AlignedBuf {
    /// A buffer of at least `cap` bytes (rounded up to [`ALIGN`]).
    pub fn new(cap: usize) -> AlignedBuf {
        let cap = cap.max(1).next_multiple_of(ALIGN);
        let mem = vec![0u8; cap + ALIGN];
        let start = mem.as_ptr().align_offset(ALIGN);
        AlignedBuf {
            mem,
            start,
            cap,
            len: 0,
        }
    }

    fn whole(&mut self) -> &mut [u8] {
        &mut self.mem[self.start..self.start + self.cap]
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        &self.mem[self.start..self.start + self.len]
    }
}

/// Opens `path`, with `O_DIRECT` if `direct` and the file system allows
/// it; the bool says whether it did.
fn open(path: &Path, options: &OpenOptions, direct: bool) -> io::Result<(File, bool)> {
    #[cfg(target_os = "linux")]
    if direct {
        use std::os::unix::fs::OpenOptionsExt;
        let mut direct = options.clone();
        direct.custom_flags(libc::O_DIRECT);
        match direct.open(path) {
            Ok(f) => return Ok((f, true)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(e),
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = direct;
    Ok((options.open(path)?, false))
}

fn is_einval(e: &io::Error) -> bool {
    #[cfg(target_os = "linux")]
    return e.raw_os_error() == Some(libc::EINVAL);
    #[cfg(not(target_os = "linux"))]
    return false;
}

/// Turns `O_DIRECT` off for `file`.
fn stop_direct(file: &File) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let fd = file.as_raw_fd();
        // SAFETY: fcntl on a descriptor `file` owns and keeps open
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        // SAFETY: as above
        if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_DIRECT) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
    Ok(())
}

/// A file written in whole aligned blocks through two buffers: while one
/// block is with the writer thread, the next fills. The last, partial block
/// is padded and the file cut back to its length by
/// [`DirectWriter::finish`], which a file must be finished with; an error of
/// a block written by the writer thread is returned by the next write or by
/// `finish`.
pub struct DirectWriter {
    file: Arc<File>,
    direct: bool,
    buf: AlignedBuf,
    /// The other buffer, when no block is being written from it.
    spare: Option<AlignedBuf>,
    /// The block with the writer thread: its buffer comes back here, with
    /// whether the file is still written directly.
    pending: Option<mpsc::Receiver<io::Result<(AlignedBuf, bool)>>>,
    written: u64,
}

/// A block for the writer thread: the file, whether it is written
/// directly, the buffer and its length, the offset, and where to send the
/// buffer back.
struct Block {
    file: Arc<File>,
    direct: bool,
    buf: AlignedBuf,
    at: u64,
    done: mpsc::SyncSender<io::Result<(AlignedBuf, bool)>>,
}

/// The writer thread's queue, the thread started at the first block.
fn writer() -> io::Result<&'static mpsc::Sender<Block>> {
    static WRITER: OnceLock<mpsc::Sender<Block>> = OnceLock::new();
    if let Some(w) = WRITER.get() {
        return Ok(w);
    }
    let (send, blocks) = mpsc::channel::<Block>();
    let started = std::thread::Builder::new()
        .name("recur-write".into())
        .spawn(move || {
            for mut b in blocks {
                let len = b.buf.len;
                let written = write_block(&b.file, b.direct, &mut b.buf, len, b.at);
                b.buf.len = 0;
                // (a writer gone has nothing to hear)
                let _ = b.done.send(written.map(|direct| (b.buf, direct)));
            }
        });
    match started {
        Ok(_) => Ok(WRITER.get_or_init(|| send)),
        // (another thread started one first: use that)
        Err(e) => WRITER.get().ok_or(e),
    }
}

/// Writes the first `len` bytes of `buf` at `at` of `file`: a whole number of
/// blocks (padded with zeros) if `direct`; the rest the ordinary way if the
/// file system took `O_DIRECT` at open but refuses this write. Returns
/// whether the file is still written directly.
fn write_block(
    file: &File,
    direct: bool,
    buf: &mut AlignedBuf,
    len: usize,
    at: u64,
) -> io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let block = if direct {
        len.next_multiple_of(ALIGN)
    } else {
        len
    };
    buf.whole()[len..block].fill(0);
    match file.write_all_at(&buf.whole()[..block], at) {
        Err(e) if direct && is_einval(&e) => {
            stop_direct(file)?;
            file.write_all_at(&buf.whole()[..len], at)?;
            Ok(false)
        }
        r => r.map(|()| direct),
    }
}

impl DirectWriter {
    /// Creates (or truncates) `path`, writing through buffers of about
    /// `capacity` bytes.
    pub fn create(path: &Path, capacity: usize) -> io::Result<DirectWriter> {
        Self::create_as(path, capacity, true)
    }

    /// [`DirectWriter::create`], trying `O_DIRECT` only if `direct`.
    fn create_as(path: &Path, capacity: usize, direct: bool) -> io::Result<DirectWriter> {
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(true);
        let (file, direct) = open(path, &options, direct)?;
        Ok(DirectWriter {
            file: Arc::new(file),
            direct,
            buf: AlignedBuf::new(capacity),
            spare: None,
            pending: None,
            written: 0,
        })
    }

    /// Waits for the block with the writer thread, if any, and takes its
    /// buffer back as the spare.
    fn wait(&mut self) -> io::Result<()> {
        if let Some(pending) = self.pending.take() {
            let (buf, direct) = pending
                .recv()
                .map_err(|_| io::Error::other("the writer thread has stopped"))??;
            self.direct &= direct;
            self.spare = Some(buf);
        }
        Ok(())
    }

    /// Hands the full buffer to the writer thread and goes on in the other
    /// one.
    fn write_buffer(&mut self) -> io::Result<()> {
        self.wait()?;
        let cap = self.buf.cap;
        let next = self.spare.take().unwrap_or_else(|| AlignedBuf::new(cap));
        let full = std::mem::replace(&mut self.buf, next);
        let (done, pending) = mpsc::sync_channel(1);
        let block = Block {
            file: self.file.clone(),
            direct: self.direct,
            at: self.written,
            buf: full,
            done,
        };
        self.written += block.buf.len as u64;
        writer()?
            .send(block)
            .map_err(|_| io::Error::other("the writer thread has stopped"))?;
        self.pending = Some(pending);
        Ok(())
    }

    /// Writes what is left and cuts the file to the bytes written; returns
    /// their number.
    pub fn finish(mut self) -> io::Result<u64> {
        self.wait()?;
        let len = self.buf.len;
        if len > 0 {
            let padded = self.direct && !len.is_multiple_of(ALIGN);
            write_block(&self.file, self.direct, &mut self.buf, len, self.written)?;
            self.written += len as u64;
            if padded {
                self.file.set_len(self.written)?;
            }
        }
        Ok(self.written)
    }
}

impl Write for DirectWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let (len, cap) = (self.buf.len, self.buf.cap);
        let n = data.len().min(cap - len);
        self.buf.whole()[len..len + n].copy_from_slice(&data[..n]);
        self.buf.len += n;
        if self.buf.len == cap {
            self.write_buffer()?;
        }
        Ok(n)
    }

    /// Does nothing: only whole blocks can be written before
    /// [`DirectWriter::finish`].
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The whole of the file at `path`, read into one aligned buffer.
pub fn read(path: &Path) -> io::Result<bytes::Bytes> {
    read_as(path, true)
}

/// [`read`], trying `O_DIRECT` only if `direct`.
fn read_as(path: &Path, direct: bool) -> io::Result<bytes::Bytes> {
    let (mut file, mut direct) = open(path, OpenOptions::new().read(true), direct)?;
    let len = file.metadata()?.len() as usize;
    let mut buf = AlignedBuf::new(len);
    let mut done = 0;
    while done < len {
        // a whole number of blocks, past the end if need be
        let end = (done + READ_CHUNK).min(buf.cap);
        match file.read(&mut buf.whole()[done..end]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // (as for writes: the rest the ordinary way)
            Err(e) if direct && is_einval(&e) => {
                stop_direct(&file)?;
                direct = false;
            }
            Err(e) => return Err(e),
        }
    }
    if done < len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{done} of {len} bytes read"),
        ));
    }
    buf.len = len;
    Ok(bytes::Bytes::from_owner(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file whose writes stop being direct midway (as where a write is
    /// refused) is whole all the same.
    #[test]
    fn direct_writes_can_stop_midway() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..5 * ALIGN + 123).map(|i| (i % 253) as u8).collect();
        let mut w = DirectWriter::create(&path, ALIGN).unwrap();
        w.write_all(&data[..2 * ALIGN + 5]).unwrap();
        stop_direct(&w.file).unwrap();
        w.direct = false;
        w.write_all(&data[2 * ALIGN + 5..]).unwrap();
        assert_eq!(w.finish().unwrap(), data.len() as u64);
        assert_eq!(read(&path).unwrap().as_ref(), &data[..]);
    }

    /// A block that fails in the background fails the write after it, or
    /// the finish: no error is lost on the writing thread.
    #[cfg(target_os = "linux")]
    #[test]
    fn errors_of_background_writes_are_returned() {
        let full = Path::new("/dev/full");
        if !full.exists() {
            return;
        }
        for blocks in [1, 2, 5] {
            let mut w = DirectWriter::create_as(full, ALIGN, false).unwrap();
            // whole blocks: every one is written in the background
            let data = vec![7u8; blocks * ALIGN];
            let failed = w.write_all(&data).is_err() || w.finish().is_err();
            assert!(failed, "{blocks} blocks to a full device");
        }
    }

    #[test]
    fn files_read_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        // lengths around the block and buffer sizes, written in odd pieces,
        // directly and not (as where the file system refuses O_DIRECT), and
        // read back either way
        for len in [0, 1, ALIGN - 1, ALIGN, ALIGN + 1, 3 * ALIGN + 17, 70_001] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            for (write_direct, read_direct) in [(true, true), (false, true), (true, false)] {
                let path = dir.path().join(format!("f{len}-{write_direct}"));
                let mut w = DirectWriter::create_as(&path, 2 * ALIGN, write_direct).unwrap();
                for piece in data.chunks(1000) {
                    w.write_all(piece).unwrap();
                }
                assert_eq!(w.finish().unwrap(), len as u64);
                let what = format!("length {len}, {write_direct}, {read_direct}");
                assert_eq!(
                    std::fs::metadata(&path).unwrap().len(),
                    len as u64,
                    "{what}"
                );
                assert_eq!(
                    read_as(&path, read_direct).unwrap().as_ref(),
                    &data[..],
                    "{what}"
                );
                assert_eq!(std::fs::read(&path).unwrap(), data, "{what}");
            }
        }
    }
}
