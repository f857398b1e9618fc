-- A results database as SoupBench 0.1.0 made it before schema versions (main at c1db5fa): one run saved
-- by that commit's storage.open_store/save_runs, dumped with sqlite3's iterdump. Tests load it to check the upgrade.
BEGIN TRANSACTION;
CREATE TABLE runs (
	id INTEGER NOT NULL, 
	suite VARCHAR(200) NOT NULL, 
	method VARCHAR(200) NOT NULL, 
	method_params JSON NOT NULL, 
	params_key VARCHAR(64) NOT NULL, 
	task VARCHAR(200) NOT NULL, 
	seed INTEGER NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	error TEXT, 
	merge_seconds DOUBLE NOT NULL, 
	eval_seconds DOUBLE NOT NULL, 
	peak_memory_mb DOUBLE NOT NULL, 
	output_rank INTEGER, 
	consumes VARCHAR(64) NOT NULL, 
	n_target_examples INTEGER, 
	base_fingerprint VARCHAR(128) NOT NULL, 
	expert_fingerprints JSON NOT NULL, 
	provenance JSON NOT NULL, 
	spec JSON NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_runs_cell UNIQUE (suite, method, params_key, task, seed), 
	CONSTRAINT ck_runs_status CHECK (status IN ('ok', 'failed'))
);
INSERT INTO "runs" VALUES(1,'micro','ties','{"density": 0.2}','ead24b9bf0f16374','math_code',0,'ok',NULL,1.0,2.0,100.0,8,'nothing',NULL,'base-0','{"math": "e-m", "code": "e-c"}','{"python": "3.11"}','{"method": "ties", "task": "math_code", "seed": 0}','2026-12-01 16:41:27.606894');
CREATE TABLE samples (
	id INTEGER NOT NULL, 
	run_id INTEGER NOT NULL, 
	doc_index INTEGER NOT NULL, 
	prompt TEXT NOT NULL, 
	generation TEXT NOT NULL, 
	target TEXT NOT NULL, 
	executed TEXT, 
	correct BOOLEAN, 
	extra JSON NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(run_id) REFERENCES runs (id) ON DELETE CASCADE
);
INSERT INTO "samples" VALUES(1,1,0,'What is 2+2?','print(4)','4','4
',1,'{"category": "add"}');
CREATE TABLE scores (
	id INTEGER NOT NULL, 
	run_id INTEGER NOT NULL, 
	metric VARCHAR(200) NOT NULL, 
	value DOUBLE NOT NULL, 
	stderr DOUBLE, 
	n_samples INTEGER NOT NULL, 
	"primary" BOOLEAN NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_scores_metric UNIQUE (run_id, metric), 
	FOREIGN KEY(run_id) REFERENCES runs (id) ON DELETE CASCADE
);
INSERT INTO "scores" VALUES(1,1,'exact_match',0.25,0.1,4,1);
CREATE INDEX ix_runs_suite ON runs (suite);
CREATE INDEX ix_scores_run_id ON scores (run_id);
CREATE INDEX ix_samples_run_id ON samples (run_id);
COMMIT;
