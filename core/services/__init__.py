"""Services: the use cases of the product, orchestrating persistence (core.db) and ML (core.ml).

Contract for the edges (app/, worker/).  Every function takes an SQLAlchemy ``Session`` first and only
flushes: the caller commits (and enqueues/publishes only after the commit).  Expected refusals raise
``core.services.errors`` (NotFound 404, Conflict and subclasses 409, InvalidInput 422, Unauthorized 401,
Forbidden 403); ``exc.code`` is a stable word, ``exc.details`` a dict.  Times are aware UTC datetimes.

Sessions: ``core.db.engine.session_factory(url, keyring)`` (the ``core.data_keys.Keyring`` that seals and
opens ratings and profiles; ``Settings.keyring()``); schema: ``core.db.migrate.upgrade(url, kek_file=)``.
Status vocabularies (``ErasureStatus``, ``JobStatus``, ``JobPhase``, ``Verdict``, ``VersionStatus``) and their
named subsets are StrEnums beside the models in ``core.db.models``; ``status=`` filters take their values.

erasures  (caller=Caller(owner, admin): a caller reaches its own requests only (NotFound otherwise);
           the default, OPERATOR, is the CLI's and in-process callers', and reaches all)
    create_erasure_request(s, user_id, items|None, IntakeConfig(salt, deadline_days), idempotency_key=None,
        caller=...) -> (ErasureRequest, created: bool)   whole user when items is None; same owner and
        key -> same request, also under concurrency; status "received", "queued" at the batcher's pass
    get_erasure_request(s, request_id, caller) -> ErasureRequest;  erasure_scope_items(s, request_id)
    list_erasure_requests(s, status=None, limit, offset, caller, everyone=False) -> [ErasureRequest]
    cancel_erasure_request(s, request_id, caller=...) -> ErasureRequest   only while received/queued
    get_certificate(s, request_id, caller) -> dict                      DSSE envelope (stored as issued)
    requeue_erasure_request(s, request_id) -> job_id     a not_unlearned request to an exact retrain
    deadline_at_risk(request, now, fraction) -> bool;  erasure_backlog(s, fraction) -> ErasureBacklog
recommendations  (all reads exclude data under a live erasure scope)
    user_history(s, user_id, history_len) -> [(item_id, rating)]   NotFound for unknown/erased users
    candidate_items(s, user_id, limit) -> [item_id]                popular unseen items
    unknown_items(s, item_ids) -> [item_id]
    prompt_catalog(s, user_ids=None, item_ids=None, histories=()) -> core.ml.prompts.Catalog   titles of
                                          the request's items only (None: every title, offline work)
    add_interactions(s, user_id, [NewRating(item_id, rating, timestamp|None)], history_len) -> [StoredRating]
batching  (task names for send_task are in core.queue_contract: RUN_JOB_TASK "e2u.run_job"(job_id) on
           UNLEARNING_QUEUE, FORM_BATCHES_TASK "e2u.form_batches"; job_settings_from(Settings()))
    form_batches(s, JobSettings, now=None) -> [job_id]      received -> queued, then claims batches;
                                                            commit, then enqueue RUN_JOB_TASK for each
                                                            (each job stores a job_config.JobConfig)
    trigger_batch_now(s, JobSettings) -> [job_id]           admin "run now"
    jobs_needing_worker(s) -> [job_id];  get_job(s, id) -> UnlearningJob;  list_jobs(s, status=None, ...)
    job_request_ids(s, job_id) -> [request_id]
pipeline
    run_job(s, job_id, PipelineRuntime(loaded, adapters_dir, worker_id, signing_key, ledger, ...), checkpoint)
        -> JobOutcome      (worker only; checkpoint = the task's session.commit); its model work is
        core.ml.unlearning_job.unlearn_and_verify, its verdict core.ml.verification (on core.ml.evidence);
        outcome "retry" (an infrastructure error, RetryPolicy): send the job again after retry_in_seconds
registry
    active_adapter(s) -> ActiveAdapter(version_id, counter, artifact_path, sha256, base_model) | None
    list_versions(s, status=None) -> [AdapterVersion];  get_version(s, id);  lineage(s, id) -> [id]
    activation_events(s) -> [ActivationEvent]
    promote_version(s, version_id, expected_version_id, expected_counter, actor, kind="promote"|"rollback")
        -> ActiveAdapter   PredatesErasure / VersionUnavailable / StalePromotion; then publish
        core.events.promotion_event(...) with core.events.promotion_publisher(settings) after commit
certificates
    certificate_document(request, scope_items, job, parent, child, issued_at) -> predicate (unsigned)
    sign_certificate(document, parent, child, SigningKey) -> DSSE envelope (in-toto Statement, PREDICATE_TYPE)
    verify_certificate(envelope, jwks) -> statement   raises core.signing.SignatureError
api_keys
    create_api_key(s, name, scopes) -> plaintext;  authenticate(s, plaintext, required_scope=None,
        verified=VerifiedKeys(seconds)) -> ApiKey (records last_used_at; a key in ``verified`` is not read
        again within its seconds);  list_api_keys(s) -> [ApiKey];  revoke_api_key(s, key_id, actor) -> ApiKey
suppression  (the ledger: core.suppression.SuppressionLedger, Settings.suppression_ledger)
    ensure_replayed(s, ledger, now) -> ReplayReport | None   before serving: apply entries this database
        lacks (a restored backup); ledger_status(s, ledger) -> LedgerStatus(caught_up, ...)
data_keys
    rotate_kek(sessions, actor) -> KekRotation     new KEK, every data key rewrapped, the old KEK deleted
bootstrap
    registry_is_initialised(s) -> bool      True once any adapter version exists: the launcher must then
        not prepare data nor train v1 (call it instead of checking for an active version or files)
    bootstrap(s, data_dir|None, adapter_folder|None, base_model) -> BootstrapReport
        before the registry exists only: imports prepared data into an empty DB, registers v1 as active
"""
