// Postman on the first click: convert the served /openapi-3.0.json to a Postman
// collection with openapi-to-postmanv2 (as Postman's importer does), run every request
// with newman against the service and its sandbox, and fail unless each one answers 2xx
// and every operation of the document was sent.
//
// Parameters and bodies come from the document's examples ("Parameter generation:
// Example" in Postman's import settings); with schema resolution Postman would send
// placeholders such as <boolean>, which no server accepts.
//
// usage: node postman.mjs BASE_URL ARTIFACTS_DIR

import { writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import converter from 'openapi-to-postmanv2';
import newman from 'newman';

const [baseUrl, artifacts] = process.argv.slice(2);
if (!baseUrl || !artifacts) {
  console.error('usage: node postman.mjs BASE_URL ARTIFACTS_DIR');
  process.exit(2);
}

const answer = await fetch(`${baseUrl}/openapi-3.0.json`);
if (!answer.ok) throw new Error(`GET /openapi-3.0.json answered ${answer.status}`);
const spec = await answer.text();
const operations = Object.values(JSON.parse(spec).paths)
  .flatMap((item) => Object.keys(item)).length;

const converted = await promisify(converter.convertV2)(
  { type: 'string', data: spec },
  { parametersResolution: 'Example' },
);
if (!converted.result) throw new Error(`conversion failed: ${converted.reason}`);
const collection = converted.output[0].data;

// The converter adds no assertions; without one newman passes whatever comes back.
collection.event = [
  {
    listen: 'test',
    script: {
      type: 'text/javascript',
      exec: [
        "pm.test(`${pm.info.requestName} answers 2xx`, () => {",
        '  pm.expect(pm.response.code).to.be.within(200, 299);',
        '});',
      ],
    },
  },
];
await writeFile(`${artifacts}/postman-collection.json`, JSON.stringify(collection, null, 2));

const summary = await promisify(newman.run)({
  collection,
  envVar: [{ key: 'baseUrl', value: baseUrl }],
  reporters: ['cli', 'junit'],
  reporter: { junit: { export: `${artifacts}/newman-junit.xml` } },
});

const { stats, failures } = summary.run;
const sent = stats.requests.total;
let failed = false;
if (failures.length > 0) {
  for (const failure of failures) {
    console.error(`newman: ${failure.source?.name ?? '?'}: ${failure.error.message}`);
  }
  failed = true;
}
if (sent !== operations) {
  console.error(`newman sent ${sent} requests; the document has ${operations} operations`);
  failed = true;
}
if (failed) process.exit(1);
console.log(`Postman collection: ${sent} requests, every one 2xx`);
