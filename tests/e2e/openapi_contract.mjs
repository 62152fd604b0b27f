// The service's own OpenAPI document as a contract for the end-to-end
// flows: every answer a flow receives must be one the document lists for
// that operation, with a body its schema accepts (ajv, JSON Schema
// 2020-12, the dialect of OpenAPI 3.1). Also lints the document with
// Redocly's recommended rules, warnings counted (tests/e2e/redocly.yaml).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';

const here = path.dirname(new URL(import.meta.url).pathname);

/// Lints `doc` (written to `dir`); throws with Redocly's report on any problem.
export function lintOpenApi(doc, dir) {
  const file = path.join(dir, 'openapi.json');
  writeFileSync(file, JSON.stringify(doc, null, 2));
  const cli = path.join(here, 'node_modules/@redocly/cli/bin/cli.js');
  try {
    execFileSync(process.execPath, [cli, 'lint', '--config', path.join(here, 'redocly.yaml'), file],
      { stdio: 'pipe', env: { ...process.env, REDOCLY_TELEMETRY: 'off', REDOCLY_SUPPRESS_UPDATE_NOTICE: 'true' } });
  } catch (e) {
    throw new Error(`redocly lint failed:\n${e.stdout}\n${e.stderr}`);
  }
}

const pointer = (parts) => '#/' + parts.map((p) => String(p).replace(/~/g, '~0').replace(/\//g, '~1')).join('/');

/// Checks answers against `doc`. `check(method, pattern, status, body)`
/// asserts the operation lists `status` and, for JSON, that `body` matches.
export function contract(doc) {
  const ajv = new Ajv2020({ strict: false, allErrors: true });
  addFormats(ajv);
  ajv.addSchema(doc, 'openapi');
  const checked = new Set();
  function check(method, pattern, status, body) {
    const op = doc.paths?.[pattern]?.[method.toLowerCase()];
    assert.ok(op, `the OpenAPI document has no ${method} ${pattern}`);
    let answer = op.responses[String(status)];
    assert.ok(answer, `${method} ${pattern} answered ${status}, which the document does not list`);
    let where = ['paths', pattern, method.toLowerCase(), 'responses', String(status)];
    if (answer.$ref) {
      const name = answer.$ref.split('/').pop();
      answer = doc.components.responses[name];
      where = ['components', 'responses', name];
    }
    checked.add(`${method} ${pattern} ${status}`);
    if (!answer.content || !answer.content['application/json'])
      return;
    const validate = ajv.getSchema('openapi' + pointer([...where, 'content', 'application/json', 'schema']));
    assert.ok(validate, `no schema for ${method} ${pattern} ${status}`);
    assert.ok(validate(body), `${method} ${pattern} ${status} does not match its schema: ` +
      `${ajv.errorsText(validate.errors)}\n${JSON.stringify(body)}`);
  }
  return { check, checked };
}
