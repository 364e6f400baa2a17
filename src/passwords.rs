//! Passwords: argon2id hashing and verification on a bounded pool of threads of its own, run
//! at a lower CPU priority than the serving threads, so a login storm cannot starve proxied
//! traffic; the strength policy; and the dummy verification that makes an unknown login cost
//! the same as a wrong password.

use crate::config::{HashPriority, PasswordsConfig};
use crate::secret::Secret;
use crate::store::PasswordHash;
use argon2::password_hash::phc::{self, Output, ParamsString, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use std::cell::RefCell;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{OnceCell, Semaphore};

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The queue is full, or no hashing thread came free within `max_wait`: answer 503 with
    /// Retry-After.
    #[error("the password hashing pool is busy")]
    Busy,
    #[error("{0}")]
    Policy(String),
    #[error("password hashing failed: {0}")]
    Internal(String),
}

type Job = Box<dyn FnOnce() + Send>;

#[derive(Debug)]
struct Inner {
    params: Params,
    /// Feeds the hashing threads; they end when it is dropped with the last clone of us.
    jobs: crossbeam_channel::Sender<Job>,
    /// Jobs sent to the hashing threads and not yet taken by one (see [`Passwords::run`]).
    waiting: Arc<std::sync::atomic::AtomicUsize>,
    /// The hashing threads (for `waiting`'s bound).
    threads: usize,
    /// When the hashing threads last showed that they get CPU.
    progress: Arc<Progress>,
    /// The starved-job thread (with `passwords.priority = "idle"`): see [`Passwords::run`].
    fallback: Option<crossbeam_channel::Sender<Job>>,
    workers: Arc<Semaphore>,
    queue: Arc<Semaphore>,
    max_wait: Duration,
    dummy: OnceCell<PasswordHash>,
    min_length: usize,
    max_length: usize,
    min_strength: u8,
}

/// When the hashing threads last took or finished a job: threads that do, however slowly,
/// are busy rather than starved, and their jobs need no second runner.
#[derive(Debug)]
struct Progress {
    base: std::time::Instant,
    ms: std::sync::atomic::AtomicU64,
}

impl Progress {
    fn new() -> Arc<Self> {
        Arc::new(Progress {
            base: crate::clock::monotonic(),
            ms: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn mark(&self) {
        self.ms
            .fetch_max(self.elapsed_ms(), std::sync::atomic::Ordering::Relaxed);
    }

    /// How long no hashing thread has taken or finished a job.
    fn quiet_for(&self) -> Duration {
        let last = self.ms.load(std::sync::atomic::Ordering::Relaxed);
        Duration::from_millis(self.elapsed_ms().saturating_sub(last))
    }
}

/// The password service; cheap to clone.
#[derive(Debug, Clone)]
pub struct Passwords(Arc<Inner>);

fn argon2(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

thread_local! {
    /// This hashing thread's argon2 memory, kept from one hash to the next. Allocating it per
    /// hash (~19 MiB) faults in ~5 000 fresh pages and unmaps them afterwards, and each unmap
    /// interrupts every core running one of our threads (a TLB shootdown): the serving threads
    /// paid for every hash of a sign-in flood.
    static MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// The largest memory cost a stored hash may name, as a multiple of the configured one: a
/// corrupt or foreign record must not make one verification allocate gigabytes.
const MAX_COST_FACTOR: usize = 16;

/// Runs `f` on `blocks` blocks of this thread's argon2 memory, wiped afterwards (nothing
/// derived from a password outlives its hash). `keep` is the most this thread keeps between
/// hashes: a hash made with a larger memory cost (before a configuration change) gets memory
/// of its own, up to [`MAX_COST_FACTOR`] times `keep`; beyond that, or when the memory cannot
/// be had, `None`.
fn with_memory<R>(blocks: usize, keep: usize, f: impl FnOnce(&mut [Block]) -> R) -> Option<R> {
    if blocks > keep {
        if blocks > keep.saturating_mul(MAX_COST_FACTOR) {
            return None;
        }
        return with_own_memory(blocks, f);
    }
    MEMORY.with_borrow_mut(|memory| {
        if memory.len() < blocks {
            memory.try_reserve_exact(blocks - memory.len()).ok()?;
            memory.resize(blocks, Block::new());
        }
        let used = memory.get_mut(..blocks)?;
        let out = f(used);
        used.fill(Block::new());
        Some(out)
    })
}

/// A new argon2id hash of `password` with `params` and a fresh 128-bit salt, as a PHC string
/// (what the crate's `hash_password` makes, on this thread's memory).
fn hash_phc(params: &Params, password: &[u8]) -> Result<PasswordHash, PasswordError> {
    hash_phc_in(params, password, true)
}

/// Runs `f` on `blocks` blocks of memory of its own, wiped and given back afterwards.
fn with_own_memory<R>(blocks: usize, f: impl FnOnce(&mut [Block]) -> R) -> Option<R> {
    let mut own = Vec::new();
    own.try_reserve_exact(blocks).ok()?;
    own.resize(blocks, Block::new());
    let out = f(&mut own);
    own.fill(Block::new());
    Some(out)
}

/// [`hash_phc`], on this thread's kept memory (`keep`) or on memory of its own, given back
/// at once (a thread that is not a hashing thread must not keep 19 MiB).
fn hash_phc_in(
    params: &Params,
    password: &[u8],
    keep: bool,
) -> Result<PasswordHash, PasswordError> {
    let internal = |e: &dyn std::fmt::Display| PasswordError::Internal(e.to_string());
    let mut salt = [0u8; 16];
    rand::fill(&mut salt);
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    let a = argon2(params);
    let blocks = params.block_count();
    let hash =
        |memory: &mut [Block]| a.hash_password_into_with_memory(password, &salt, &mut out, memory);
    let done = if keep {
        with_memory(blocks, blocks, hash)
    } else {
        with_own_memory(blocks, hash)
    };
    done.ok_or_else(|| internal(&"no memory for the hash"))?
        .map_err(|e| internal(&e))?;
    let hash = phc::PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(|e| internal(&e))?,
        salt: Some(Salt::new(&salt).map_err(|e| internal(&e))?),
        hash: Some(Output::new(&out).map_err(|e| internal(&e))?),
    };
    Ok(PasswordHash(hash.to_string()))
}

/// Whether `password` matches the PHC string `stored` (any argon2 variant, version and cost
/// it names), compared in constant time; an unreadable hash matches nothing.
fn verify_phc(stored: &str, password: &[u8], keep: usize) -> bool {
    use subtle::ConstantTimeEq;
    let Ok(hash) = phc::PasswordHash::new(stored) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(version), Ok(params)) = (
        Algorithm::try_from(hash.algorithm.as_str()),
        hash.version
            .map_or(Ok(Version::default()), Version::try_from),
        Params::try_from(&hash),
    ) else {
        return false;
    };
    let a = Argon2::new(algorithm, version, params.clone());
    let mut out = [0u8; Output::MAX_LENGTH];
    let Some(out) = out.get_mut(..expected.len()) else {
        return false;
    };
    let done = with_memory(params.block_count(), keep, |memory| {
        a.hash_password_into_with_memory(password, salt.as_ref(), out, memory)
    });
    matches!(done, Some(Ok(()))) && bool::from(out.ct_eq(expected.as_ref()))
}

impl Passwords {
    pub fn new(cfg: &PasswordsConfig) -> Result<Self, PasswordError> {
        let params = Params::new(cfg.memory_kib, cfg.iterations, cfg.parallelism, None)
            .map_err(|e| PasswordError::Internal(e.to_string()))?;
        let workers = match cfg.workers {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            n => n,
        };
        let jobs = spawn_threads(
            "authgate-hash",
            workers,
            cfg.priority,
            cfg.release_memory_after,
        )?;
        // SCHED_IDLE threads get no CPU while anything else wants it; one thread at a small
        // but fair share takes over a job they have left waiting (see `run`).
        let fallback = match cfg.priority {
            HashPriority::Idle => Some(spawn_threads(
                "authgate-hash-starved",
                1,
                HashPriority::Fallback,
                cfg.release_memory_after,
            )?),
            _ => None,
        };
        Ok(Passwords(Arc::new(Inner {
            params,
            jobs,
            waiting: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            threads: workers,
            progress: Progress::new(),
            fallback,
            max_wait: cfg.max_wait,
            workers: Arc::new(Semaphore::new(workers)),
            queue: Arc::new(Semaphore::new(match cfg.max_queue {
                0 => 8 * workers,
                n => n.max(workers),
            })),
            dummy: OnceCell::new(),
            min_length: cfg.min_length,
            max_length: cfg.max_length,
            min_strength: cfg.min_strength,
        })))
    }

    /// Runs `job` on a hashing thread, at most `workers` at once, at most `max_queue` waiting
    /// or running; beyond that the caller gets `Busy` at once, and a caller that waits
    /// `max_wait` for a thread without getting one gets `Busy` then. The threads yield the CPU
    /// to proxied traffic, so on a saturated machine a hash can be slow; the client must not
    /// wait for it: past 3 × `max_wait` the caller gets `Busy` while the hash ends in the
    /// background, still holding its slot.
    ///
    /// At SCHED_IDLE a hash gets no CPU at all while anything else on the machine wants it
    /// (another process's busy loop, a backup, a build), and every sign-in would end in
    /// `Busy`. So a job whose answer has not come after [`STARVED_AFTER`], while no idle
    /// thread has taken or finished a job for as long (they are starved, not merely busy with
    /// a flood), or by 3 × `max_wait` in any case, is also given to the starved-job thread,
    /// which runs at a small but fair share of a contended core (nice 10: about a tenth of
    /// it): the first of the two answers is taken, and the other thread skips the job, or
    /// drops its result; such a caller waits up to [`STARVED_DEADLINE`]. One thread, so a
    /// sign-in flood that starves the idle threads takes at most that share from proxied
    /// traffic. When the idle threads leave `4 × threads` jobs untaken, new jobs go to the
    /// starved-job thread alone.
    async fn run<T: Send + 'static>(
        &self,
        job: impl Fn() -> T + Send + Sync + 'static,
    ) -> Result<T, PasswordError> {
        let queued = self
            .0
            .queue
            .clone()
            .try_acquire_owned()
            .map_err(|_| PasswordError::Busy)?;
        let start = crate::clock::timer_now();
        let worker = tokio::time::timeout(self.0.max_wait, self.0.workers.clone().acquire_owned())
            .await
            .map_err(|_| PasswordError::Busy)?
            .map_err(|_| PasswordError::Busy)?;
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        // The permits travel with the job: a client that hangs up drops this future, but a
        // hash under way runs on, and keeps its slot until it ends (else disconnecting
        // clients get unbounded hashes). They are given back by the first answer, or when
        // the job is skipped (answered by the other thread, or its client gone).
        let answer = Arc::new(Answer {
            job,
            state: Mutex::new(Some((tx, (worker, queued)))),
        });
        use std::sync::atomic::Ordering::Relaxed;
        let starving = self
            .0
            .fallback
            .as_ref()
            .filter(|_| self.0.waiting.load(Relaxed) >= 4 * self.0.threads);
        match starving {
            // The idle threads have left this many jobs untaken: they are starved, and a job
            // sent there would only wait (and be skipped later).
            Some(fallback) => {
                let again = answer.clone();
                fallback
                    .send(Box::new(move || again.run()))
                    .map_err(|_| stopped())?;
            }
            None => {
                let first = answer.clone();
                let waiting = self.0.waiting.clone();
                let progress = self.0.progress.clone();
                waiting.fetch_add(1, Relaxed);
                self.0
                    .jobs
                    .send(Box::new(move || {
                        waiting.fetch_sub(1, Relaxed);
                        progress.mark();
                        first.run();
                        progress.mark();
                    }))
                    .map_err(|_| stopped())?;
            }
        }
        let mut deadline = start + 3 * self.0.max_wait;
        if let Some(fallback) = &self.0.fallback {
            if starving.is_none() {
                loop {
                    match tokio::time::timeout(STARVED_AFTER, &mut rx).await {
                        Ok(out) => return out.map_err(|_| failed()),
                        Err(_)
                            if self.0.progress.quiet_for() < STARVED_AFTER
                                && crate::clock::timer_now() + STARVED_AFTER < deadline =>
                        {
                            // Busy, not starved: the idle threads are getting through jobs.
                        }
                        Err(_) => {
                            let again = answer.clone();
                            let _ = fallback.send(Box::new(move || again.run()));
                            break;
                        }
                    }
                }
            }
            // At its small share the starved-job thread needs longer than an idle core.
            deadline = deadline.max(start + STARVED_DEADLINE);
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Err(_) => Err(PasswordError::Busy),
            Ok(out) => out.map_err(|_| failed()),
        }
    }

    /// The whole policy without hashing: length, then strength (on the pool: zxcvbn on a long
    /// input takes milliseconds).
    pub async fn check_policy(
        &self,
        password: &Secret,
        user_inputs: Vec<String>,
    ) -> Result<(), PasswordError> {
        self.check_length(password)?;
        let min_strength = self.0.min_strength;
        let pw = password.clone();
        self.run(move || strength_ok(&pw, &user_inputs, min_strength))
            .await?
    }

    /// Checks the policy (length, then strength against common passwords and the user's own
    /// details) and hashes the password.
    pub async fn hash_new(
        &self,
        password: &Secret,
        user_inputs: Vec<String>,
    ) -> Result<PasswordHash, PasswordError> {
        self.check_length(password)?;
        let params = self.0.params.clone();
        let min_strength = self.0.min_strength;
        let pw = password.clone();
        self.run(move || {
            strength_ok(&pw, &user_inputs, min_strength)?;
            hash_phc(&params, pw.expose().as_bytes())
        })
        .await?
    }

    pub fn check_length(&self, password: &Secret) -> Result<(), PasswordError> {
        let n = password.expose().chars().count();
        if n < self.0.min_length {
            return Err(PasswordError::Policy(format!(
                "must be at least {} characters",
                self.0.min_length
            )));
        }
        if n > self.0.max_length {
            return Err(PasswordError::Policy(format!(
                "must be at most {} characters",
                self.0.max_length
            )));
        }
        Ok(())
    }

    /// Verifies `password` against `hash`; with no hash (unknown user, passwordless account)
    /// a dummy hash is verified instead, so the answer takes the same time and is `false`.
    pub async fn verify(
        &self,
        password: &Secret,
        hash: Option<&PasswordHash>,
    ) -> Result<bool, PasswordError> {
        let (hash, real) = match hash {
            Some(h) => (h.clone(), true),
            None => (self.dummy().await?, false),
        };
        // Over-long input is refused without hashing it (and costs the same as a miss).
        let too_long = password.expose().len() > 4 * self.0.max_length;
        let pw = password.clone();
        let params = self.0.params.clone();
        let ok = self
            .run(move || {
                let candidate: &[u8] = if too_long {
                    b""
                } else {
                    pw.expose().as_bytes()
                };
                verify_phc(&hash.0, candidate, params.block_count())
            })
            .await?;
        Ok(ok && real && !too_long)
    }

    /// Makes the dummy hash ahead of the first unknown login, and loads the strength
    /// checker's dictionaries ahead of the first new password: once, at start-up, at the
    /// process's own priority (the lowered hashing threads may have no CPU to spare for
    /// either while the machine is busy).
    pub async fn warm_up(&self) -> Result<(), PasswordError> {
        let params = self.0.params.clone();
        // Through the cell: a sign-in that comes meanwhile waits for this one.
        self.0
            .dummy
            .get_or_try_init(|| async {
                tokio::task::spawn_blocking(move || {
                    let _ = zxcvbn::zxcvbn("warm up the dictionaries", &[]);
                    let mut random = [0u8; 24];
                    rand::fill(&mut random);
                    hash_phc_in(&params, &random, false)
                })
                .await
                .map_err(|_| failed())?
            })
            .await
            .map(drop)
    }

    async fn dummy(&self) -> Result<PasswordHash, PasswordError> {
        let params = self.0.params.clone();
        self.0
            .dummy
            .get_or_try_init(|| async {
                let mut random = [0u8; 24];
                rand::fill(&mut random);
                self.run(move || hash_phc(&params, &random)).await?
            })
            .await
            .cloned()
    }
}

/// How long a job may go unanswered at SCHED_IDLE before the starved-job thread runs it too:
/// a hash takes about 25 ms of CPU, so a job this late has been starved, or queued behind a
/// flood that the idle threads are not keeping up with.
pub const STARVED_AFTER: Duration = Duration::from_millis(150);

/// How long a caller waits for a job the starved-job thread has taken: at a tenth of a
/// contended core a hash takes a few hundred milliseconds, and a few behind one another
/// longer.
pub const STARVED_DEADLINE: Duration = Duration::from_secs(6);

/// The pool's slots a job holds: a worker's and its place in the queue.
type Permits = (
    tokio::sync::OwnedSemaphorePermit,
    tokio::sync::OwnedSemaphorePermit,
);

/// A job that one or two threads may run, and the one answer that its caller takes.
struct Answer<F, T> {
    job: F,
    /// Until the first answer (or a skip): where it goes, and the slots it holds.
    state: Mutex<Option<(tokio::sync::oneshot::Sender<T>, Permits)>>,
}

impl<F: Fn() -> T, T> Answer<F, T> {
    /// Runs the job unless it has been answered; the first answer gives the slots back. (A
    /// job whose caller has gone still runs, holding its slots, as it would have once begun:
    /// the pool's bounds stay those of its callers.)
    fn run(&self) {
        let lock = || self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if lock().is_none() {
            return;
        }
        let out = (self.job)();
        if let Some((tx, permits)) = lock().take() {
            // The slots first: a caller woken by the answer may ask again at once.
            drop(permits);
            let _ = tx.send(out);
        }
    }
}

fn failed() -> PasswordError {
    PasswordError::Internal("a hashing job failed".into())
}

fn stopped() -> PasswordError {
    PasswordError::Internal("the hashing threads have stopped".into())
}

/// Starts the hashing threads. Each lowers its own scheduling priority to `priority`: when the
/// cores are contended the kernel runs the serving threads first, so hashes slow down instead
/// of proxied requests (with idle cores, hashing runs at full speed all the same).
///
/// A thread gives its argon2 memory back once no job has come for `release_after`: an idle
/// gateway does not hold ~19 MiB per thread, and under a flood (jobs keep coming) nothing is
/// mapped or unmapped per hash.
fn spawn_threads(
    name: &str,
    n: usize,
    priority: HashPriority,
    release_after: Duration,
) -> Result<crossbeam_channel::Sender<Job>, PasswordError> {
    use crossbeam_channel::RecvTimeoutError;
    let (tx, rx) = crossbeam_channel::unbounded::<Job>();
    for i in 0..n {
        let rx = rx.clone();
        std::thread::Builder::new()
            .name(format!("{name}-{i}"))
            .spawn(move || {
                lower_priority(priority);
                loop {
                    // Holding memory, wait at most the quiet period; without, sleep until a
                    // job comes (no wake-ups on an idle gateway).
                    let next = if holds_memory() {
                        rx.recv_timeout(release_after)
                    } else {
                        rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
                    };
                    match next {
                        // A panicking job drops its answer channel (its caller gets an
                        // error); the thread stays, so the pool keeps its size.
                        Ok(job) => drop(std::panic::catch_unwind(AssertUnwindSafe(job))),
                        Err(RecvTimeoutError::Timeout) => release_memory(),
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            })
            .map_err(|e| PasswordError::Internal(format!("cannot start a hashing thread: {e}")))?;
    }
    Ok(tx)
}

/// Whether this thread keeps argon2 memory between hashes now.
fn holds_memory() -> bool {
    MEMORY.with_borrow(|m| m.capacity() > 0)
}

/// Gives this thread's argon2 memory back, wiped again first: a hash that panicked midway
/// skipped its own wipe.
fn release_memory() {
    MEMORY.with_borrow_mut(|m| {
        m.fill(Block::new());
        *m = Vec::new();
    });
}

#[cfg(target_os = "linux")]
fn lower_priority(priority: HashPriority) {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy, thread_native_id,
    };
    // On Linux a thread id names one thread to setpriority(2): only this thread changes.
    let nice = |n| {
        rustix::process::setpriority_process(Some(rustix::thread::gettid()), n)
            .map_err(|e| e.to_string())
    };
    let done = match priority {
        HashPriority::Normal => return,
        HashPriority::Low => nice(19),
        HashPriority::Fallback => nice(10),
        // A nice value cannot do this: a thread at nice 19 still runs out its time slice
        // before a woken serving thread gets the core back; a SCHED_IDLE one yields at once.
        HashPriority::Idle => thread_priority::set_thread_priority_and_policy(
            thread_native_id(),
            ThreadPriority::Min,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
        )
        .map_err(|e| e.to_string()),
    };
    if let Err(error) = done {
        tracing::warn!(%error, ?priority, "cannot lower the hashing threads' priority");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority(_priority: HashPriority) {}

fn strength_ok(pw: &Secret, user_inputs: &[String], min_strength: u8) -> Result<(), PasswordError> {
    let inputs: Vec<&str> = user_inputs.iter().map(String::as_str).collect();
    let score = u8::from(zxcvbn::zxcvbn(pw.expose(), &inputs).score());
    if score < min_strength {
        return Err(PasswordError::Policy(
            "this password is too common or too easy to guess; try a longer phrase".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cheap hashes at the process's priority: these tests are about the pool and the
    /// policy, not about yielding the CPU, and must not depend on an idle machine.
    fn fast() -> Passwords {
        Passwords::new(&PasswordsConfig {
            memory_kib: 1024,
            iterations: 1,
            priority: HashPriority::Normal,
            ..Default::default()
        })
        .unwrap()
    }

    #[tokio::test]
    async fn hash_and_verify() {
        let p = fast();
        let pw = Secret::new("correct horse battery staple");
        let h = p.hash_new(&pw, vec![]).await.unwrap();
        assert!(h.0.starts_with("$argon2id$"));
        assert!(p.verify(&pw, Some(&h)).await.unwrap());
        assert!(
            !p.verify(&Secret::new("wrong horse battery staple"), Some(&h))
                .await
                .unwrap()
        );
        assert!(!p.verify(&pw, None).await.unwrap(), "dummy never matches");
    }

    #[test]
    fn hashes_are_the_crates_phc_strings_both_ways() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let params = Params::new(1024, 1, 1, None).unwrap();
        let pw = b"correct horse battery staple";
        // Ours verifies with the crate's verifier (the format stored for years to come)...
        let ours = hash_phc(&params, pw).unwrap();
        assert!(ours.0.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"));
        let a = argon2(&params);
        assert!(a.verify_password(pw, ours.0.as_str()).is_ok());
        assert!(a.verify_password(b"wrong", ours.0.as_str()).is_err());
        // ...and hashes the crate made (argon2id and others) verify with ours.
        let keep = params.block_count();
        let theirs = a.hash_password(pw).unwrap().to_string();
        assert!(verify_phc(&theirs, pw, keep));
        assert!(!verify_phc(&theirs, b"wrong", keep));
        let argon2i = Argon2::new(Algorithm::Argon2i, Version::V0x10, params.clone())
            .hash_password(pw)
            .unwrap()
            .to_string();
        assert!(argon2i.starts_with("$argon2i$v=16$"), "{argon2i}");
        assert!(verify_phc(&argon2i, pw, keep));
        // A hash with more memory than this thread keeps still verifies (on memory of its own).
        let bigger = argon2(&Params::new(4096, 1, 1, None).unwrap())
            .hash_password(pw)
            .unwrap()
            .to_string();
        assert!(verify_phc(&bigger, pw, keep));
        // Tampered or unreadable hashes match nothing.
        let mut tampered = ours.0.clone();
        tampered.pop();
        tampered.push(if ours.0.ends_with('A') { 'B' } else { 'A' });
        assert!(!verify_phc(&tampered, pw, keep));
        assert!(!verify_phc(
            "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ",
            pw,
            keep
        ));
        assert!(!verify_phc("not a hash", pw, keep));
        assert!(!verify_phc("", pw, keep));
    }

    #[test]
    fn thread_memory_is_kept_and_wiped() {
        let params = Params::new(1024, 1, 1, None).unwrap();
        hash_phc(&params, b"correct horse battery staple").unwrap();
        MEMORY.with_borrow(|m| {
            assert_eq!(m.len(), params.block_count(), "kept for the next hash");
            assert!(
                m.iter().all(|b| b.as_ref().iter().all(|w| *w == 0)),
                "wiped"
            );
        });
    }

    #[tokio::test]
    async fn policy_refuses_short_long_and_common() {
        let p = fast();
        for bad in [
            "short",
            "password",
            "password123",
            "qwertyuiop",
            "alice@example.com1",
        ] {
            let r = p
                .hash_new(&Secret::new(bad), vec!["alice@example.com".into()])
                .await;
            assert!(matches!(r, Err(PasswordError::Policy(_))), "{bad} accepted");
        }
        let long = "x".repeat(200);
        assert!(matches!(
            p.hash_new(&Secret::new(long), vec![]).await,
            Err(PasswordError::Policy(_))
        ));
    }

    #[tokio::test]
    async fn a_dropped_caller_keeps_its_slot_until_the_hash_ends() {
        let p = Passwords::new(&PasswordsConfig {
            workers: 1,
            max_queue: 1,
            priority: HashPriority::Normal,
            ..Default::default()
        })
        .unwrap();
        let pw = Secret::new("correct horse battery staple");
        // Start a verification and give up on it at once, as a client that hangs up does.
        let started =
            tokio::time::timeout(std::time::Duration::from_millis(1), p.verify(&pw, None)).await;
        assert!(started.is_err(), "the caller gave up");
        // The hash still runs: the slot is taken, so the next caller is told the pool is busy.
        assert!(matches!(
            p.verify(&pw, None).await,
            Err(PasswordError::Busy)
        ));
    }

    #[tokio::test]
    async fn a_wait_for_a_thread_ends_in_busy_after_max_wait() {
        let p = Passwords::new(&PasswordsConfig {
            workers: 1,
            max_queue: 4,
            max_wait: std::time::Duration::from_millis(200),
            memory_kib: 1024,
            iterations: 1,
            priority: HashPriority::Normal,
            ..Default::default()
        })
        .unwrap();
        // The only thread is taken: a caller waits out max_wait, then hears Busy.
        let held = p.0.workers.clone().try_acquire_owned().unwrap();
        let start = crate::clock::monotonic();
        assert!(matches!(
            p.verify(&Secret::new("whatever12"), None).await,
            Err(PasswordError::Busy)
        ));
        assert!(start.elapsed() >= std::time::Duration::from_millis(200));
        drop(held);
        assert!(!p.verify(&Secret::new("whatever12"), None).await.unwrap());
    }

    // The sleeping job runs on a hashing thread, never on the runtime's.
    #[allow(clippy::disallowed_methods)]
    #[tokio::test]
    async fn a_slow_hash_answers_busy_and_keeps_its_slot() {
        let p = Passwords::new(&PasswordsConfig {
            workers: 1,
            max_queue: 1,
            max_wait: std::time::Duration::from_millis(100),
            priority: HashPriority::Normal,
            ..Default::default()
        })
        .unwrap();
        let start = crate::clock::monotonic();
        let slow = p.run(|| std::thread::sleep(std::time::Duration::from_millis(800)));
        assert!(matches!(slow.await, Err(PasswordError::Busy)));
        let took = start.elapsed();
        assert!(took >= std::time::Duration::from_millis(300), "{took:?}");
        // The hash still runs and holds the only slot.
        assert!(matches!(p.run(|| ()).await, Err(PasswordError::Busy)));
        tokio::time::sleep(std::time::Duration::from_millis(800)).await;
        assert!(p.run(|| ()).await.is_ok());
    }

    #[test]
    fn a_stored_hash_naming_a_huge_memory_cost_is_refused_without_allocating_it() {
        // m = 4 GiB: 16 times the configured 1024 KiB at most is allowed.
        let huge = "$argon2id$v=19$m=4194304,t=1,p=1$c2FsdHNhbHRzYWx0$\
                    AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        let keep = Params::new(1024, 1, 1, None).unwrap().block_count();
        assert!(!verify_phc(huge, b"anything", keep));
        assert!(with_memory(keep * 17, keep, |_| ()).is_none());
        assert!(with_memory(keep * 2, keep, |_| ()).is_some());
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashing_threads_run_at_the_configured_priority() {
        use thread_priority::{NormalThreadSchedulePolicy as N, ThreadSchedulePolicy as S};
        let own = || {
            (
                rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap(),
                thread_priority::thread_schedule_policy().unwrap(),
            )
        };
        let (nice, policy) = own();
        for (priority, want) in [
            (HashPriority::Normal, (nice, policy)),
            (HashPriority::Low, (19, policy)),
            (HashPriority::Fallback, (10, policy)),
            (HashPriority::Idle, (0, S::Normal(N::Idle))),
        ] {
            // Straight to the threads (the pool's starved-job thread could answer instead).
            let jobs = spawn_threads("test", 1, priority, Duration::from_secs(30)).unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            jobs.send(Box::new(move || {
                let _ = tx.send(own());
            }))
            .unwrap();
            let (seen_nice, seen_policy) = rx.recv().unwrap();
            assert_eq!(seen_policy, want.1, "{priority:?}");
            // SCHED_IDLE ignores nice (and an unprivileged thread may keep a higher one).
            if priority != HashPriority::Idle {
                assert_eq!(seen_nice, want.0, "{priority:?}");
            }
        }
        // The calling thread is left alone.
        assert_eq!(own(), (nice, policy));
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // a test thread's sleep, no runtime here
    fn a_hashing_thread_keeps_its_memory_while_jobs_come_and_gives_it_back_after_a_quiet_spell() {
        let params = Params::new(256, 1, 1, None).unwrap();
        let jobs = spawn_threads(
            "test-release",
            1,
            HashPriority::Normal,
            Duration::from_millis(300),
        )
        .unwrap();
        // Each job says whether the thread held memory when it started, then hashes.
        let ask = |params: Params| {
            let (tx, rx) = std::sync::mpsc::channel();
            jobs.send(Box::new(move || {
                let held = holds_memory();
                hash_phc(&params, b"pw").unwrap();
                let _ = tx.send(held);
            }))
            .unwrap();
            rx.recv().unwrap()
        };
        assert!(!ask(params.clone()), "no memory before the first hash");
        // Back to back (a flood): the memory stays.
        for _ in 0..3 {
            assert!(ask(params.clone()), "kept between hashes");
        }
        std::thread::sleep(Duration::from_millis(900));
        assert!(!ask(params.clone()), "given back after the quiet period");
        assert!(ask(params), "and kept again");
    }

    #[test]
    fn an_answered_job_is_skipped_and_the_first_answer_frees_its_slots() {
        let sem = Arc::new(Semaphore::new(2));
        let permits = || {
            (
                sem.clone().try_acquire_owned().unwrap(),
                sem.clone().try_acquire_owned().unwrap(),
            )
        };
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = runs.clone();
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let a = Answer {
            job: move || counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            state: Mutex::new(Some((tx, permits()))),
        };
        a.run();
        assert_eq!(rx.try_recv().unwrap(), 0, "answered");
        assert_eq!(
            sem.available_permits(),
            2,
            "slots given back with the answer"
        );
        a.run();
        assert_eq!(
            runs.load(std::sync::atomic::Ordering::Relaxed),
            1,
            "the second is skipped"
        );
    }

    #[tokio::test]
    async fn full_queue_answers_busy() {
        let p = Passwords::new(&PasswordsConfig {
            workers: 1,
            max_queue: 1,
            memory_kib: 1024,
            iterations: 1,
            priority: HashPriority::Normal,
            ..Default::default()
        })
        .unwrap();
        let held = p.0.queue.clone().try_acquire_owned().unwrap();
        assert!(matches!(
            p.verify(&Secret::new("whatever12"), None).await,
            Err(PasswordError::Busy)
        ));
        drop(held);
        assert!(!p.verify(&Secret::new("whatever12"), None).await.unwrap());
    }
}
