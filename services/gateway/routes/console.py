"""The staff console: one static page that calls the staff API with the token typed in.

The page holds no data and no credentials of its own: everything it shows comes from
``/v1/admin/...`` with the operator's bearer token, kept in the browser's session storage.
"""

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["console"])

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Exchange staff console</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1c2733}
 header{background:#1c2733;color:#fff;padding:10px 16px;display:flex;gap:12px;align-items:center}
 header input{flex:1;max-width:420px;padding:4px}
 main{display:grid;grid-template-columns:repeat(auto-fit,minmax(360px,1fr));gap:12px;padding:12px}
 section{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:10px}
 h2{font-size:15px;margin:0 0 8px} button{margin:2px 4px 2px 0}
 pre{background:#f0f2f4;padding:6px;max-height:320px;overflow:auto;font-size:12px;white-space:pre-wrap}
 label{display:inline-block;margin-right:6px}
</style></head><body>
<header><strong>Exchange staff console</strong>
 <input id="token" type="password" placeholder="staff bearer token">
 <button onclick="saveToken()">use token</button></header>
<main>
 <section><h2>Business date and end of day</h2>
  <button onclick="call('GET','/v1/admin/business-date','eod')">business date</button>
  <label>date <input id="eodDate" type="date"></label>
  <button onclick="call('POST','/v1/admin/eod','eod',{business_date:v('eodDate')})">run EOD</button>
  <button onclick="call('GET','/v1/admin/eod/'+v('eodDate'),'eod')">EOD progress</button>
  <button onclick="call('GET','/v1/admin/settlements/'+v('eodDate'),'eod')">settlement report</button>
  <button onclick="call('GET','/v1/admin/settlements/'+v('eodDate')+'/instructions','eod')">instruction file</button>
  <pre id="eod"></pre></section>
 <section><h2>Reconciliation</h2>
  <label>date <input id="recDate" type="date"></label>
  <input id="statement" type="file" accept=".csv,text/csv">
  <button onclick="upload()">load bank statement</button>
  <button onclick="call('GET','/v1/admin/reconciliations/'+v('recDate'),'rec')">latest report</button>
  <pre id="rec"></pre></section>
 <section><h2>Deposits</h2>
  <label>member <input id="depMember" size="30"></label><label>amount <input id="depAmount" size="10" placeholder="5000.00"></label>
  <label>bank reference <input id="depRef" size="18"></label>
  <button onclick="call('POST','/v1/admin/deposits','dep',{member_id:v('depMember'),amount:v('depAmount'),bank_reference:v('depRef')})">credit</button>
  <pre id="dep"></pre></section>
 <section><h2>Accounts</h2>
  <label>as of <input id="asOf" type="date"></label>
  <button onclick="call('GET','/v1/admin/accounts?asset=CNY'+(v('asOf')?'&as_of='+v('asOf'):''),'acc')">CNY accounts</button>
  <pre id="acc"></pre></section>
 <section><h2>Products</h2>
  <button onclick="call('GET','/v1/instruments','ins')">list</button>
  <label>code <input id="code" size="14"></label>
  <button onclick="call('POST','/v1/admin/instruments/'+v('code')+'/halt','ins')">halt</button>
  <button onclick="call('POST','/v1/admin/instruments/'+v('code')+'/resume','ins')">resume</button>
  <button onclick="if(confirm('Delisting is final. Delist '+v('code')+'?'))call('POST','/v1/admin/instruments/'+v('code')+'/delist','ins')">delist</button>
  <pre id="ins"></pre></section>
 <section><h2>Audit trail</h2>
  <button onclick="call('GET','/v1/admin/audit?limit=200','aud')">recent staff actions</button>
  <pre id="aud"></pre></section>
</main>
<script>
const v = id => document.getElementById(id).value.trim();
const token = () => sessionStorage.getItem('staffToken') || '';
function saveToken(){ sessionStorage.setItem('staffToken', v('token')); document.getElementById('token').value=''; }
async function show(out, response){
  const type = response.headers.get('content-type') || '';
  const text = await response.text();
  let body = text;
  if (type.includes('json')) { try { body = JSON.stringify(JSON.parse(text), null, 2); } catch (e) {} }
  document.getElementById(out).textContent = response.status + ' ' + response.statusText + '\\n' + body;
}
async function call(method, path, out, body){
  const headers = {'Authorization': 'Bearer ' + token()};
  const init = {method, headers};
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    headers['Idempotency-Key'] = crypto.randomUUID();
    init.body = JSON.stringify(body);
  }
  try { await show(out, await fetch(path, init)); }
  catch (e) { document.getElementById(out).textContent = String(e); }
}
async function upload(){
  const file = document.getElementById('statement').files[0];
  if (!file) { document.getElementById('rec').textContent = 'choose a statement file'; return; }
  const response = await fetch('/v1/admin/reconciliations/' + v('recDate'), {method: 'POST',
    headers: {'Authorization': 'Bearer ' + token(), 'Content-Type': 'text/csv',
              'Idempotency-Key': crypto.randomUUID()}, body: await file.text()});
  await show('rec', response);
}
</script></body></html>
"""


@router.get("/console", response_class=HTMLResponse, include_in_schema=False)
async def console() -> HTMLResponse:
    """The staff console page (it calls the staff API with the token the user enters)."""
    return HTMLResponse(PAGE, headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY"})
